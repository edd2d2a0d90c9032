//! Just enough HTTP/1.1 for the `web` guest: parsing one request head from
//! the bytes a connection has received so far ([`parse`]), routing it
//! ([`route`]) and writing a complete response ([`Response::to_bytes`]).
//! Every response carries `Content-Length` and `Connection: close`: one
//! request per connection.
//!
//! # Invariants
//! - Parsing never panics and never looks past [`MAX_HEAD`] bytes: a head
//!   that is not complete by then is a bad request (400).
//! - A request line is `METHOD SP /target SP HTTP/1.0|HTTP/1.1` with a token
//!   method and a visible-ASCII origin-form target; every header line has a
//!   token name followed by `:`. Anything else is a bad request.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

/// Longest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 4096;

/// A parsed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, without any query string.
    pub path: &'a str,
    /// Bytes of the head, the blank line included.
    pub head_len: usize,
}

/// What the bytes received so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// The head is not complete yet.
    Incomplete,
    /// A well-formed head.
    Request(Request<'a>),
    /// Not HTTP/1.x (answer 400 and close).
    Bad,
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Parses the request head at the start of `received`.
pub fn parse(received: &[u8]) -> Parsed<'_> {
    let window = &received[..received.len().min(MAX_HEAD)];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if received.len() >= MAX_HEAD {
            Parsed::Bad
        } else {
            Parsed::Incomplete
        };
    };
    let Ok(head) = core::str::from_utf8(&window[..end]) else {
        return Parsed::Bad;
    };
    let mut lines = head.split("\r\n");
    let Some(request_line) = lines.next() else {
        return Parsed::Bad;
    };
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Parsed::Bad;
    };
    if !is_token(method)
        || !target.starts_with('/')
        || !target.bytes().all(|b| b.is_ascii_graphic())
        || !matches!(version, "HTTP/1.0" | "HTTP/1.1")
    {
        return Parsed::Bad;
    }
    for line in lines {
        let Some((name, _value)) = line.split_once(':') else {
            return Parsed::Bad;
        };
        if !is_token(name) || line.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Parsed::Bad;
        }
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    Parsed::Request(Request {
        method,
        path,
        head_len: end + 4,
    })
}

/// A response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// `HEAD`: the head only (with the body's length).
    pub head_only: bool,
}

/// The reason phrase of the statuses the server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

impl Response {
    fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: format!("{status} {}: {body}\n", reason(status)),
            head_only: false,
        }
    }

    /// 400, for a head [`parse`] refused.
    pub fn bad_request() -> Response {
        Response::text(400, "the request is not HTTP/1.x")
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nServer: paravane-web\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: close\r\n\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if self.status == 405 { "Allow: GET, HEAD\r\n" } else { "" },
        )
        .into_bytes();
        if !self.head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// What the server has to say about itself, for `/stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub uptime_ms: u64,
    /// Requests answered, this one included.
    pub requests: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub tx_frames: u64,
    pub tx_errors: u64,
    pub rx_frames: u64,
    pub rx_errors: u64,
}

impl Stats {
    /// The JSON object `/stats` serves.
    pub fn to_json(&self) -> String {
        format!(
            "{{\"uptime_ms\": {}, \"requests\": {}, \"bytes_received\": {}, \"bytes_sent\": {}, \
             \"netfront\": {{\"tx_frames\": {}, \"tx_errors\": {}, \"rx_frames\": {}, \"rx_errors\": {}}}}}\n",
            self.uptime_ms,
            self.requests,
            self.bytes_received,
            self.bytes_sent,
            self.tx_frames,
            self.tx_errors,
            self.rx_frames,
            self.rx_errors
        )
    }
}

/// The text every page served at `/` carries (the host checks for it).
pub const PAGE_MARKER: &str = "Served by a Paravane guest";

/// The page at `/`.
pub fn page(name: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><title>Paravane web guest</title></head>\n<body>\n\
         <h1>{PAGE_MARKER}</h1>\n\
         <p>This page comes from <b>{name}</b>, a paravirtualized guest: smoltcp over netfront, \
         through the driver domain's netback and bridge, out of its virtio-net NIC.</p>\n\
         <p><a href=\"/stats\">/stats</a> has the server's counters.</p>\n</body></html>\n"
    )
}

/// What a request gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Routed {
    /// Send this and close.
    Reply(Response),
    /// Send this, close, then stop serving (`/quit`).
    ReplyAndQuit(Response),
}

/// Routes a request: `GET`/`HEAD` of `/` (or `/index.html`), `/stats`
/// (`stats` with `requests` counting this one) and `/quit`; another path
/// is 404, another method 405.
pub fn route(req: &Request<'_>, name: &str, stats: &Stats) -> Routed {
    let head_only = req.method == "HEAD";
    if req.method != "GET" && !head_only {
        return Routed::Reply(Response::text(405, "only GET and HEAD are served"));
    }
    let mut response = match req.path {
        "/" | "/index.html" => Response {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: page(name),
            head_only: false,
        },
        "/stats" => Response {
            status: 200,
            content_type: "application/json",
            body: stats.to_json(),
            head_only: false,
        },
        "/quit" => {
            let mut bye = Response::text(200, "the server stops after this answer");
            bye.head_only = head_only;
            return Routed::ReplyAndQuit(bye);
        }
        _ => Response::text(404, "no such page"),
    };
    response.head_only = head_only;
    Routed::Reply(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(bytes: &[u8]) -> Request<'_> {
        match parse(bytes) {
            Parsed::Request(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn parses_requests() {
        let r = request(b"GET /stats?x=1 HTTP/1.1\r\nHost: a\r\nUser-Agent: curl/8\r\n\r\nrest");
        assert_eq!((r.method, r.path), ("GET", "/stats"));
        assert_eq!(r.head_len, 56);
        assert_eq!(request(b"HEAD / HTTP/1.0\r\n\r\n").method, "HEAD");
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Incomplete);
        assert_eq!(parse(b""), Parsed::Incomplete);
    }

    #[test]
    fn refuses_bad_heads() {
        for bad in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 x\r\n\r\n",
            b"GET /\x7f HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
            b"hello\r\n\r\n",
        ] {
            assert_eq!(
                parse(bad),
                Parsed::Bad,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = alloc::vec![b'a'; MAX_HEAD];
        assert_eq!(parse(&long), Parsed::Bad);
        assert_eq!(parse(&long[..MAX_HEAD - 1]), Parsed::Incomplete);
    }

    #[test]
    fn routes_and_renders() {
        let stats = Stats {
            requests: 2,
            ..Stats::default()
        };
        let get = |path| Request {
            method: "GET",
            path,
            head_len: 0,
        };
        let Routed::Reply(r) = route(&get("/"), "web", &stats) else {
            panic!()
        };
        assert_eq!(r.status, 200);
        let bytes = String::from_utf8(r.to_bytes()).unwrap();
        assert!(bytes.starts_with("HTTP/1.1 200 OK\r\n"), "{bytes}");
        assert!(bytes.contains(&format!("Content-Length: {}\r\n", r.body.len())));
        assert!(bytes.contains("Connection: close\r\n"));
        assert!(bytes.ends_with(&r.body) && r.body.contains(PAGE_MARKER));
        let Routed::Reply(r) = route(&get("/stats"), "web", &stats) else {
            panic!()
        };
        assert!(r.body.contains("\"requests\": 2,"), "{}", r.body);
        let Routed::Reply(r) = route(&get("/nope"), "web", &stats) else {
            panic!()
        };
        assert_eq!(r.status, 404);
        assert!(matches!(
            route(&get("/quit"), "web", &stats),
            Routed::ReplyAndQuit(Response { status: 200, .. })
        ));
        let post = Request {
            method: "POST",
            ..get("/")
        };
        let Routed::Reply(r) = route(&post, "web", &stats) else {
            panic!()
        };
        assert_eq!(r.status, 405);
        assert!(String::from_utf8(r.to_bytes())
            .unwrap()
            .contains("Allow: GET, HEAD\r\n"));
        let head = Request {
            method: "HEAD",
            ..get("/")
        };
        let Routed::Reply(r) = route(&head, "web", &stats) else {
            panic!()
        };
        let bytes = r.to_bytes();
        assert!(bytes.ends_with(b"\r\n\r\n"), "HEAD sends no body");
        assert!(String::from_utf8(bytes)
            .unwrap()
            .contains(&format!("Content-Length: {}\r\n", r.body.len())));
        assert_eq!(Response::bad_request().status, 400);
    }

    proptest! {
        /// Whatever arrives, parsing does not panic, a request's head lies
        /// inside the input and within MAX_HEAD, and its path starts with `/`.
        #[test]
        fn parse_is_total(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            if let Parsed::Request(r) = parse(&bytes) {
                prop_assert!(r.head_len <= bytes.len() && r.head_len <= MAX_HEAD);
                prop_assert!(r.path.starts_with('/'));
            }
        }

        /// A well-formed request with random headers parses to its path.
        #[test]
        fn good_requests_parse(
            path in "/[a-z0-9/._-]{0,40}",
            headers in proptest::collection::vec(("[A-Za-z-]{1,12}", "[ -~]{0,30}"), 0..8),
        ) {
            let mut text = format!("GET {path} HTTP/1.1\r\n");
            for (n, v) in &headers {
                text.push_str(&format!("{n}: {v}\r\n"));
            }
            text.push_str("\r\n");
            prop_assert_eq!(
                parse(text.as_bytes()),
                Parsed::Request(Request { method: "GET", path: &path, head_len: text.len() })
            );
        }
    }
}
