//! The `http` fuzz target: the `web` guest's request parser
//! (`web::http::parse`) on bytes as a client sends them, and the response
//! its router builds for what it accepts. Invariants: parsing never
//! panics; an accepted head ends with the blank line inside the input and
//! within `MAX_HEAD`, its method is a token and its path starts with `/`;
//! an input shorter than `MAX_HEAD` without a blank line is incomplete;
//! every response is a well-formed HTTP/1.1 head whose `Content-Length`
//! is its body's length.

use web::http::{parse, route, Parsed, Response, Routed, Stats, MAX_HEAD};

/// Tokens the mutator inserts.
pub const DICTIONARY: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b" ",
    b"GET",
    b"HEAD",
    b"POST",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"/stats",
    b"/quit",
    b"Host: ",
    b":",
    b"?",
    b"\x00",
    b"\xff",
];

/// Real requests (the mutator breaks them).
pub fn seeds() -> Vec<Vec<u8>> {
    [
        &b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n"[..],
        b"GET /stats HTTP/1.0\r\n\r\n",
        b"HEAD /index.html?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
        b"DELETE / HTTP/1.1\r\n\r\n",
    ]
    .iter()
    .map(|s| s.to_vec())
    .collect()
}

fn check_response(r: &Response) {
    let bytes = r.to_bytes();
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head ends with a blank line")
        + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).expect("a response head is text");
    assert!(
        head.starts_with(&format!("HTTP/1.1 {} ", r.status)),
        "{head}"
    );
    assert!(
        head.contains(&format!("\r\nContent-Length: {}\r\n", r.body.len())),
        "{head}"
    );
    let body = &bytes[head_end..];
    if r.head_only {
        assert!(body.is_empty(), "HEAD sends no body");
    } else {
        assert_eq!(body, r.body.as_bytes());
    }
}

/// Runs one input; true if it parsed as a request.
pub fn run(bytes: &[u8]) -> bool {
    match parse(bytes) {
        Parsed::Request(req) => {
            assert!(req.head_len <= bytes.len() && req.head_len <= MAX_HEAD);
            assert_eq!(&bytes[req.head_len - 4..req.head_len], b"\r\n\r\n");
            assert!(!req.method.is_empty() && req.method.bytes().all(|b| b.is_ascii_graphic()));
            assert!(req.path.starts_with('/'));
            let stats = Stats {
                requests: bytes.len() as u64,
                ..Stats::default()
            };
            match route(&req, "fuzz", &stats) {
                Routed::Reply(r) | Routed::ReplyAndQuit(r) => check_response(&r),
            }
            true
        }
        Parsed::Incomplete => {
            assert!(
                bytes.len() < MAX_HEAD,
                "a head is complete or bad by MAX_HEAD bytes"
            );
            assert!(
                !bytes.windows(4).any(|w| w == b"\r\n\r\n"),
                "a blank line completes the head"
            );
            false
        }
        Parsed::Bad => {
            check_response(&Response::bad_request());
            false
        }
    }
}
