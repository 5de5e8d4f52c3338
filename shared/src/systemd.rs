//! Readiness for systemd's `Type=notify` units: `READY=1` once the service serves,
//! `STOPPING=1` when it begins a graceful shutdown.
//!
//! The protocol (sd_notify(3)): systemd puts the path of a datagram Unix socket in
//! `$NOTIFY_SOCKET`; the service sends newline-separated `KEY=VALUE` assignments to it. A
//! path starting with `@` names a socket in the abstract namespace (Linux). Without the
//! variable (not started by systemd, or not `Type=notify`) every call is a no-op, so the
//! binaries call these unconditionally. Written by hand rather than with a crate: it is
//! one `sendto`, and std has everything it needs.
//!
//! The variable is left set: `STOPPING=1` needs it after `READY=1`, and child processes
//! that inherit it are ignored by systemd as long as the unit says `NotifyAccess=main`.

use std::ffi::OsString;

use crate::Error;

/// Tells systemd the service is up: with `Type=notify`, `systemctl start` returns (and
/// units ordered after this one start) only now.
///
/// `Ok(true)`: sent; `Ok(false)`: no `$NOTIFY_SOCKET`, nothing to do. An error is worth a
/// warning, not an exit: the service works, systemd just will not hear that it is ready.
pub fn notify_ready() -> Result<bool, Error> {
    notify("READY=1")
}

/// Tells systemd a graceful shutdown has begun (shown as "deactivating" until exit).
pub fn notify_stopping() -> Result<bool, Error> {
    notify("STOPPING=1")
}

/// Sends `state` (one or more `KEY=VALUE` lines) to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) -> Result<bool, Error> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(socket) if !socket.is_empty() => send(&socket, state).map(|()| true),
        _ => Ok(false),
    }
}

#[cfg(unix)]
fn send(socket: &OsString, state: &str) -> Result<(), Error> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    let fail = |source| Error::Notify {
        socket: socket.to_string_lossy().into_owned(),
        source,
    };
    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound().map_err(fail)?;
    match bytes.split_first() {
        Some((b'/', _)) => sock.send_to(state.as_bytes(), socket).map_err(fail)?,
        Some((b'@', name)) => send_abstract(&sock, name, state.as_bytes()).map_err(fail)?,
        // systemd >= 254 also offers `vsock:`; we run on the host it manages.
        _ => {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "not an absolute path or @abstract name",
            )));
        }
    };
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(
    sock: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    msg: &[u8],
) -> std::io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr)
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
fn send_abstract(
    _sock: &std::os::unix::net::UnixDatagram,
    _name: &[u8],
    _msg: &[u8],
) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

#[cfg(not(unix))]
fn send(_socket: &OsString, _state: &str) -> Result<(), Error> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::sync::Mutex;
    use std::time::Duration;

    /// Tests that set `NOTIFY_SOCKET` hold this, so that none sees another's value.
    static ENV: Mutex<()> = Mutex::new(());

    /// Runs `f` with `NOTIFY_SOCKET` set to `value` (or unset), restoring it afterwards.
    fn with_notify_socket<T>(value: Option<&std::ffi::OsStr>, f: impl FnOnce() -> T) -> T {
        let _guard = ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let before = std::env::var_os("NOTIFY_SOCKET");
        // SAFETY: serialized by ENV; no other test in this crate reads NOTIFY_SOCKET, and
        // std's own environment lock covers the other tests' std::env calls.
        unsafe {
            match value {
                Some(v) => std::env::set_var("NOTIFY_SOCKET", v),
                None => std::env::remove_var("NOTIFY_SOCKET"),
            }
        }
        let out = f();
        // SAFETY: as above.
        unsafe {
            match before {
                Some(v) => std::env::set_var("NOTIFY_SOCKET", v),
                None => std::env::remove_var("NOTIFY_SOCKET"),
            }
        }
        out
    }

    fn receive(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn ready_and_stopping_reach_a_socket_named_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let sent = with_notify_socket(Some(path.as_os_str()), || {
            (notify_ready().unwrap(), notify_stopping().unwrap())
        });
        assert_eq!(sent, (true, true));
        assert_eq!(receive(&sock), "READY=1");
        assert_eq!(receive(&sock), "STOPPING=1");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = format!("lookout-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).unwrap();
        let var = OsString::from(format!("@{name}"));
        let sent = with_notify_socket(Some(&var), notify_ready).unwrap();
        assert!(sent);
        assert_eq!(receive(&sock), "READY=1");
    }

    #[test]
    fn without_notify_socket_nothing_is_sent_and_nothing_fails() {
        assert!(!with_notify_socket(None, notify_ready).unwrap());
        assert!(!with_notify_socket(Some("".as_ref()), notify_stopping).unwrap());
    }

    #[test]
    fn a_missing_socket_is_an_error_naming_it_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nobody-listens.sock");
        let err = with_notify_socket(Some(path.as_os_str()), notify_ready).unwrap_err();
        assert!(err.to_string().contains("nobody-listens.sock"), "{err}");
    }

    #[test]
    fn a_relative_or_unknown_address_is_refused() {
        for bad in ["notify.sock", "vsock:2:1234"] {
            let err = with_notify_socket(Some(bad.as_ref()), notify_ready).unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
