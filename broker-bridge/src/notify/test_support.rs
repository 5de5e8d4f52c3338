//! What the plugins' tests share besides the test HTTP server (`test_server`, which is
//! `tests/common/http.rs`, shared with the end-to-end tests).

use serde_json::json;

use crate::notify::Notification;

/// A firing alarm as the agent publishes it (`docs/topics.md`), already rendered.
pub(crate) fn alarm() -> Notification {
    let fields = json!({
        "id": "sim-1:cpu_util:1795457375316", "host": "sim-1", "source": "cpu_util",
        "state": "firing", "severity": 3, "ts": 1795457376316_u64, "started_at": 1795457375316_u64,
        "score": 4.1, "threshold": 2.0,
        "summary": "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)",
        "labels": {"ip": "10.0.0.1"}
    });
    Notification {
        target: "test".into(),
        topic: "lookout/sim-1/alarms/cpu_util".into(),
        title: "[firing] sim-1 cpu_util".into(),
        body: "cpu_util: anomaly score 4.10 >= 2.00 on sim-1 (severity 3)".into(),
        raw: fields.to_string().into_bytes(),
        fields,
    }
}

/// [`alarm`] with the documentation's window (`docs/img/alarm-example.json`): a
/// notification that carries a picture.
pub(crate) fn windowed_alarm() -> Notification {
    let mut n = alarm();
    n.fields["window"] = crate::picture::tests::example()["window"].clone();
    n
}

/// Decodes a PNG as a plugin sent it and checks it is the picture: 640 × 360, at most
/// 100 KiB.
pub(crate) fn assert_picture(png: &[u8]) {
    assert!(
        png.len() <= crate::picture::MAX_BYTES,
        "{} bytes",
        png.len()
    );
    let d = crate::picture::tests::Decoded::of(png);
    assert_eq!(
        (d.width, d.height),
        (crate::picture::WIDTH, crate::picture::HEIGHT)
    );
}

/// One part of a `multipart/form-data` body.
#[derive(Debug)]
pub(crate) struct Part {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub data: Vec<u8>,
}

impl Part {
    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.data).expect("UTF-8 part")
    }
}

/// The parts of a `multipart/form-data` body, read as RFC 7578 defines them (the
/// boundary from the request's content type).
pub(crate) fn multipart(content_type: &str, body: &[u8]) -> Vec<Part> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .expect("a boundary")
        .trim_matches('"');
    assert!(
        content_type.starts_with("multipart/form-data"),
        "{content_type}"
    );
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(at) = find(rest, delimiter.as_bytes()) {
        rest = &rest[at + delimiter.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let rest_after_crlf = rest.strip_prefix(b"\r\n").expect("CRLF after the boundary");
        let head_end = find(rest_after_crlf, b"\r\n\r\n").expect("part headers");
        let head = std::str::from_utf8(&rest_after_crlf[..head_end]).expect("ASCII headers");
        let disposition = head.lines().next().unwrap_or_default();
        let data_start = &rest_after_crlf[head_end + 4..];
        let end = find(data_start, format!("\r\n{delimiter}").as_bytes()).expect("part end");
        let param = |key: &str| {
            disposition.split(';').find_map(|p| {
                p.trim()
                    .strip_prefix(&format!("{key}=\""))
                    .map(|v| v.trim_end_matches('"').to_owned())
            })
        };
        let content_type = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_owned())
        });
        parts.push(Part {
            name: param("name").expect("a name"),
            filename: param("filename"),
            content_type,
            data: data_start[..end].to_vec(),
        });
        rest = &data_start[end + 2..];
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Standard base64 (padding and line breaks ignored), as MIME parts are encoded.
pub(crate) fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &s)| n | u32::from(s) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
