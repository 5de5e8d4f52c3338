//! TLS and login for MQTT clients, from the keys both binaries accept in their `[mqtt]`
//! tables (and the bridge in its `mqtt` targets):
//!
//! | key | meaning |
//! |---|---|
//! | `url` | `mqtts://host:port` turns TLS on ([`crate::url`]) |
//! | `ca_file` | PEM certificates of the CAs that sign the broker's certificate; default: the system's trust store |
//! | `cert_file`, `key_file` | PEM client certificate (chain) and its private key, for brokers that require client certificates (mutual TLS) |
//! | `insecure_skip_verify` | accept any broker certificate, for any name; off by default, logged at warn on every start |
//! | `username`, `password` / `password_file` | MQTT login; the password as a [`Secret`] |
//!
//! Everything is read and checked once, at start, so a wrong path or an unreadable key
//! fails there with the key and the file named, not at the first connection. rustls is
//! rumqttc's own (`rumqttc::tokio_rustls::rustls`), so the config built here is the one
//! rumqttc takes. The crypto provider is ring, the only one built into Lookout (see the
//! workspace's Cargo.toml): [`provider`] names it explicitly, and
//! [`install_default_provider`] makes it the process default for the libraries that look
//! for one (reqwest).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rumqttc::tokio_rustls::rustls;
use rumqttc::{TlsConfiguration, Transport};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::secret::Secret;
use crate::url::MqttUrl;

/// The TLS keys of an `[mqtt]` table, as parsed (paths not yet read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// What can be wrong with TLS settings; each variant names the key (and the file) at
/// fault, so callers only prefix their table (`mqtt.`, `targets.NAME.`). Kept beside the
/// code that raises it; [`crate::Error`] stays the crate's error for wire formats.
/// Displayed as `key: reason`.
#[derive(Debug)]
pub enum TlsError {
    /// A key that is missing, or does not go with the others.
    Key { key: &'static str, message: String },
    /// A file named by a key cannot be read or holds nothing usable.
    File {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
    /// No `ca_file` and no usable certificate in the system's trust store.
    SystemRoots(String),
    /// rustls refused the combination (should not happen with the keys above).
    Setup(String),
}

impl TlsError {
    /// The config key at fault (`ca_file`, `cert_file`, ...).
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Key { key, .. } | TlsError::File { key, .. } => key,
            TlsError::SystemRoots(_) => "ca_file",
            TlsError::Setup(_) => "url",
        }
    }

    /// What is wrong, without the key: for callers whose errors carry the key themselves.
    pub fn reason(&self) -> String {
        match self {
            TlsError::Key { message, .. } => message.clone(),
            TlsError::File { path, message, .. } => format!("{}: {message}", path.display()),
            TlsError::SystemRoots(why) => format!(
                "not set, and the system trust store gave no usable certificate ({why}); \
                 set ca_file"
            ),
            TlsError::Setup(why) => format!("TLS setup: {why}"),
        }
    }
}

impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key(), self.reason())
    }
}

impl std::error::Error for TlsError {}

impl TlsSettings {
    /// True when no TLS key is set.
    pub fn is_empty(&self) -> bool {
        self == &TlsSettings::default()
    }

    /// Checks that the keys fit together and with the URL's scheme: TLS keys need
    /// `mqtts://` (a plain connection would silently ignore them), and a client certificate
    /// needs its key and the other way round.
    pub fn check(&self, tls: bool) -> Result<(), TlsError> {
        if !tls {
            let set = [
                ("ca_file", self.ca_file.is_some()),
                ("cert_file", self.cert_file.is_some()),
                ("key_file", self.key_file.is_some()),
                ("insecure_skip_verify", self.insecure_skip_verify),
            ];
            if let Some((key, _)) = set.into_iter().find(|(_, on)| *on) {
                return Err(TlsError::Key {
                    key,
                    message: "is only used with mqtts:// URLs".into(),
                });
            }
            return Ok(());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(TlsError::Key {
                key: "key_file",
                message: "is required with cert_file (the client certificate's private key)".into(),
            }),
            (None, Some(_)) => Err(TlsError::Key {
                key: "cert_file",
                message: "is required with key_file (the client certificate)".into(),
            }),
            _ => Ok(()),
        }
    }
}

/// The crypto provider: the process default if the program installed one, else ring.
pub fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Makes ring the process's default provider, for libraries built without one of their
/// own (reqwest's `rustls-no-provider`), which would otherwise panic when they first build
/// a TLS config. Idempotent: a provider installed before is kept.
pub fn install_default_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing the same provider is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A rustls client config from `settings`: trust `ca_file` (else the system's store),
/// present `cert_file`/`key_file` when set, verify the broker's name unless
/// `insecure_skip_verify`, which is logged at warn (naming `context`) every time it is used.
pub fn client_config(
    settings: &TlsSettings,
    context: &str,
) -> Result<rustls::ClientConfig, TlsError> {
    settings.check(true)?;
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?;
    let builder = if settings.insecure_skip_verify {
        tracing::warn!(
            connection = context,
            "TLS CERTIFICATE VERIFICATION IS OFF (insecure_skip_verify = true): any server can \
             pose as the broker and read or forge the traffic; use ca_file instead"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate { provider }))
    } else {
        builder.with_root_certificates(roots(settings.ca_file.as_deref())?)
    };
    match (&settings.cert_file, &settings.key_file) {
        (Some(cert_file), Some(key_file)) => {
            let chain = read_certs("cert_file", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::File {
                key: "key_file",
                path: key_file.clone(),
                message: format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) read: {e}"),
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::File {
                    key: "key_file",
                    path: key_file.clone(),
                    message: format!("does not fit cert_file {}: {e}", cert_file.display()),
                })
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// A rumqttc transport: plain TCP for `mqtt://`, TLS built by [`client_config`] for
/// `mqtts://`. Checks that TLS keys are not given with a plain URL.
pub fn transport(
    url: &MqttUrl,
    settings: &TlsSettings,
    context: &str,
) -> Result<Transport, TlsError> {
    settings.check(url.tls)?;
    if !url.tls {
        return Ok(Transport::Tcp);
    }
    let config = client_config(settings, context)?;
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(config),
    )))
}

/// `password` or `password_file`, not both; the file's content with its trailing newline
/// removed.
pub fn password(
    password: Option<Secret>,
    password_file: Option<&Path>,
) -> Result<Option<Secret>, TlsError> {
    match (password, password_file) {
        (Some(_), Some(_)) => Err(TlsError::Key {
            key: "password_file",
            message: "set password or password_file, not both".into(),
        }),
        (p, None) => Ok(p),
        (None, Some(path)) => Secret::from_file(path)
            .map(Some)
            .map_err(|message| TlsError::File {
                key: "password_file",
                path: path.to_owned(),
                message,
            }),
    }
}

/// A plain-words explanation of a TLS connection error's text (rumqttc's
/// `ConnectionError` displayed), for the log line that reports it; `None` when the error
/// is not about certificates.
pub fn hint(error: &str) -> Option<&'static str> {
    const HINTS: [(&[&str], &str); 6] = [
        (
            &["UnknownIssuer", "BadSignature"],
            "the broker's certificate is not signed by a CA in ca_file (or, without ca_file, \
             in the system trust store)",
        ),
        (
            &["NotValidForName", "not valid for name"],
            "the broker's certificate does not hold the host name of the URL; connect by a \
             name (or IP address) the certificate was issued for",
        ),
        (
            &["Expired", "NotValidYet"],
            "the broker's certificate is outside its validity period (or this machine's clock \
             is wrong)",
        ),
        (
            &["CertificateRequired", "certificate required"],
            "the broker requires a client certificate: set cert_file and key_file",
        ),
        (
            &[
                "UnknownCA",
                "unknown ca",
                "BadCertificate",
                "bad certificate",
            ],
            "the broker does not accept the client certificate in cert_file",
        ),
        (
            &[
                "InvalidCertificate",
                "invalid peer certificate",
                "HandshakeFailure",
            ],
            "the TLS handshake with the broker failed; check ca_file, cert_file and the URL",
        ),
    ];
    HINTS
        .iter()
        .find(|(needles, _)| needles.iter().any(|n| error.contains(n)))
        .map(|(_, hint)| *hint)
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        key,
        path: path.to_owned(),
        message,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| err(format!("cannot read PEM certificates: {e}")))?;
    if certs.is_empty() {
        return Err(err("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let (added, _) = roots.add_parsable_certificates(read_certs("ca_file", path)?);
            if added == 0 {
                return Err(TlsError::File {
                    key: "ca_file",
                    path: path.to_owned(),
                    message: "holds no certificate usable as a trust anchor".into(),
                });
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "no certificates found".into());
                return Err(TlsError::SystemRoots(why));
            }
        }
    }
    Ok(roots)
}

/// `insecure_skip_verify`: any certificate for any name is accepted, but the handshake's
/// signatures are still checked (so the session is at least with the key holder of the
/// certificate shown).
#[derive(Debug)]
struct AcceptAnyCertificate {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        /// A CA, a server certificate for localhost and a client certificate it signed.
        fn new() -> Files {
            use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
            let dir = tempfile::tempdir().unwrap();
            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let issuer = rcgen::Issuer::new(ca, ca_key);
            let client_key = KeyPair::generate().unwrap();
            let client = CertificateParams::new(vec!["client".to_string()])
                .unwrap()
                .signed_by(&client_key, &issuer)
                .unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
            std::fs::write(dir.path().join("client.pem"), client.pem()).unwrap();
            std::fs::write(dir.path().join("client.key"), client_key.serialize_pem()).unwrap();
            std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
            Files { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }
    }

    fn tls_url() -> MqttUrl {
        crate::url::parse("mqtts://localhost:8883").unwrap()
    }

    #[test]
    fn a_ca_file_and_a_client_certificate_build_a_transport() {
        let f = Files::new();
        let s = TlsSettings {
            ca_file: Some(f.path("ca.pem")),
            cert_file: Some(f.path("client.pem")),
            key_file: Some(f.path("client.key")),
            insecure_skip_verify: false,
        };
        assert!(matches!(
            transport(&tls_url(), &s, "test"),
            Ok(Transport::Tls(_))
        ));
        let cfg = client_config(&s, "test").unwrap();
        assert!(cfg.client_auth_cert_resolver.has_certs());
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let f = Files::new();
        let err = client_config(
            &TlsSettings {
                ca_file: Some(f.path("missing.pem")),
                ..Default::default()
            },
            "test",
        )
        .unwrap_err();
        assert_eq!(err.key(), "ca_file");
        assert!(err.to_string().contains("missing.pem"), "{err}");
        let err = client_config(
            &TlsSettings {
                ca_file: Some(f.path("garbage.pem")),
                ..Default::default()
            },
            "test",
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("ca_file: "), "{err}");
        assert!(err.to_string().contains("garbage.pem"), "{err}");
        // The CA's certificate is no private key.
        let err = client_config(
            &TlsSettings {
                ca_file: Some(f.path("ca.pem")),
                cert_file: Some(f.path("client.pem")),
                key_file: Some(f.path("ca.pem")),
                insecure_skip_verify: false,
            },
            "test",
        )
        .unwrap_err();
        assert_eq!(err.key(), "key_file", "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let err = TlsSettings {
            cert_file: Some(f.path("client.pem")),
            ..Default::default()
        }
        .check(true)
        .unwrap_err();
        assert_eq!(err.key(), "key_file");
    }

    #[test]
    fn without_ca_file_the_system_store_is_used_or_the_error_says_to_set_ca_file() {
        // Machines differ: with a CA bundle installed this builds, without one the error
        // must tell the user what to do; either way no panic.
        match client_config(&TlsSettings::default(), "test") {
            Ok(cfg) => assert!(!cfg.client_auth_cert_resolver.has_certs()),
            Err(e) => {
                assert_eq!(e.key(), "ca_file");
                assert!(e.to_string().contains("set ca_file"), "{e}");
            }
        }
    }

    #[test]
    fn certificate_errors_get_a_hint_and_others_none() {
        assert!(
            hint("TLS: I/O: invalid peer certificate: UnknownIssuer")
                .unwrap()
                .contains("ca_file")
        );
        assert!(
            hint("invalid peer certificate: certificate not valid for name \"127.0.0.1\"")
                .unwrap()
                .contains("host name")
        );
        assert_eq!(hint("I/O: Connection refused (os error 111)"), None);
    }

    #[test]
    fn tls_keys_with_a_plain_url_are_refused() {
        let url = crate::url::parse("mqtt://localhost").unwrap();
        let Err(err) = transport(
            &url,
            &TlsSettings {
                insecure_skip_verify: true,
                ..Default::default()
            },
            "test",
        ) else {
            panic!("accepted TLS keys with mqtt://");
        };
        assert_eq!(err.key(), "insecure_skip_verify");
        assert!(matches!(
            transport(&url, &TlsSettings::default(), "test"),
            Ok(Transport::Tcp)
        ));
    }

    #[test]
    fn passwords_come_from_one_key_and_need_a_user() {
        let f = Files::new();
        let pw_file = f.path("pw");
        std::fs::write(&pw_file, "s3cret\n").unwrap();
        let pw = password(None, Some(&pw_file)).unwrap().unwrap();
        assert_eq!(pw.expose(), "s3cret");
        let err = password(Some(pw.clone()), Some(&pw_file)).unwrap_err();
        assert_eq!(err.key(), "password_file");
        let err = password(None, Some(&f.path("nope"))).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        // The login itself is checked where it is used: shared::mqtt::ClientConfig.
        assert!(!err.to_string().contains("s3cret"));
    }
}
