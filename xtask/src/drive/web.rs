//! The `web` guest's host side: fetches its pages with the real `curl`
//! through QEMU's `hostfwd` (host 127.0.0.1:PORT → user network → the
//! driver domain's virtio-net NIC → bridge → netback → the guest's
//! netfront) and checks status codes and contents, then fetches `/quit` so
//! the guest powers off and the machine ends normally.
//!
//! [`check`] is the `web` scenario's full round (page, stats, 404, 405,
//! 400, many sequential connections); [`demo`] the demo's short one.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use super::Session;

/// Text every page the guest serves at `/` carries (`web::http::PAGE_MARKER`).
pub const PAGE_MARKER: &str = "Served by a Paravane guest";
/// The serial line that says the guest is serving.
const LISTENING: &str = "web: listening on http://";
/// How long the guest may take to come up (TCG, a cold user network).
const STARTUP: Duration = Duration::from_secs(120);
/// `curl --max-time`, seconds.
const CURL_MAX_TIME: &str = "30";
/// Sequential connections of the `web` scenario's endurance part.
pub const SEQUENTIAL: u64 = 20;

/// One fetch: the status code and the body.
struct Fetched {
    status: u16,
    body: String,
}

/// `curl` with `extra` arguments on `url`; fails when curl does (no answer
/// within the time limit, connection refused) or is missing.
fn curl(extra: &[&str], url: &str) -> Result<Fetched, String> {
    let output = Command::new("curl")
        .args(["-sS", "--max-time", CURL_MAX_TIME, "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                "curl not found: install it (Debian: apt-get install curl)".to_owned()
            }
            _ => format!("cannot run curl: {e}"),
        })?;
    if !output.status.success() {
        return Err(format!(
            "curl {url} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = code
        .trim()
        .parse()
        .map_err(|_| format!("curl {url}: no status code in its output"))?;
    Ok(Fetched {
        status,
        body: body.to_owned(),
    })
}

/// Fetches `url` and requires `status`.
fn expect_status(
    session: &Session,
    extra: &[&str],
    url: &str,
    status: u16,
) -> Result<Fetched, String> {
    let fetched = curl(extra, url)?;
    if fetched.status != status {
        return Err(format!(
            "{url}: status {} instead of {status}: {}",
            fetched.status,
            fetched.body.trim()
        ));
    }
    session.note(format!(
        "curl {}{url}: {} ({} bytes)",
        extra.iter().map(|a| format!("{a} ")).collect::<String>(),
        fetched.status,
        fetched.body.len()
    ));
    Ok(fetched)
}

/// The number after `"key": ` in a JSON text.
fn json_number(text: &str, key: &str) -> Option<u64> {
    let at = text.find(&format!("\"{key}\": "))? + key.len() + 4;
    let digits: String = text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Fetches `/stats` and requires `requests` to be `expected`.
fn expect_requests(session: &Session, base: &str, expected: u64) -> Result<(), String> {
    let stats = expect_status(session, &[], &format!("{base}/stats"), 200)?;
    match json_number(&stats.body, "requests") {
        Some(n) if n == expected => Ok(()),
        other => Err(format!(
            "/stats counts {other:?} requests, expected {expected}: {}",
            stats.body.trim()
        )),
    }
}

/// Waits for the guest, says how to reach it, and fetches `/` (the page
/// and its marker) and `/stats` (counting both requests).
fn first_round(session: &Session) -> Result<String, String> {
    session.wait_for(LISTENING, STARTUP)?;
    let base = format!("http://127.0.0.1:{}", session.host_port);
    session.note(format!(
        "the web guest is serving; from the host: curl {base}/"
    ));
    let page = expect_status(session, &[], &format!("{base}/"), 200)?;
    if !page.body.contains(PAGE_MARKER) {
        return Err(format!(
            "the page lacks `{PAGE_MARKER}`: {}",
            page.body.trim()
        ));
    }
    expect_requests(session, &base, 2)?;
    Ok(base)
}

/// Sends `raw` on a plain TCP connection and returns the status line of
/// the answer.
fn raw_request(port: u16, raw: &[u8]) -> Result<String, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connecting to 127.0.0.1:{port}: {e}"))?;
    let limit = Some(Duration::from_secs(30));
    stream
        .set_read_timeout(limit)
        .and_then(|()| stream.set_write_timeout(limit))
        .map_err(|e| format!("socket timeouts: {e}"))?;
    stream
        .write_all(raw)
        .map_err(|e| format!("sending a raw request: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the answer to a raw request: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or("").to_owned())
}

/// Opens a connection and sends half a request head, leaving it waiting.
fn open_partial(port: u16) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .map_err(|e| format!("connecting to 127.0.0.1:{port}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("socket timeout: {e}"))?;
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: paravane")
        .map_err(|e| format!("sending half a request: {e}"))?;
    Ok(stream)
}

/// Half-closes a connection left by [`open_partial`] and returns the
/// status line the server answers the incomplete head with.
fn finish_partial(mut stream: TcpStream) -> Result<String, String> {
    stream
        .shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("half-closing: {e}"))?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .map_err(|e| format!("reading the answer to half a request: {e}"))?;
    Ok(String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned())
}

/// The `web` scenario.
pub fn check(session: &Session) -> Result<(), String> {
    let base = first_round(session)?;
    // A client that stalls mid-request holds one connection; the others
    // must be served meanwhile.
    let stalled = open_partial(session.host_port)?;
    expect_status(session, &[], &format!("{base}/no-such-page"), 404)?;
    expect_status(session, &["-X", "DELETE"], &format!("{base}/"), 405)?;
    let status = raw_request(session.host_port, b"HELLO THERE\r\n\r\n")?;
    if status != "HTTP/1.1 400 Bad Request" {
        return Err(format!("a malformed request got `{status}`, not 400"));
    }
    session.note(format!("a malformed request: {status}"));
    // One curl, many URLs: one connection each (the server closes them).
    let url = format!("{base}/index.html");
    let output = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "120",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}\n",
        ])
        .args(std::iter::repeat_n(&url, SEQUENTIAL as usize))
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    let codes = String::from_utf8_lossy(&output.stdout);
    let ok = codes.lines().filter(|c| *c == "200").count() as u64;
    if !output.status.success() || ok != SEQUENTIAL {
        return Err(format!(
            "{SEQUENTIAL} sequential fetches: {ok} answered 200 ({}; {})",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    session.note(format!(
        "{SEQUENTIAL} sequential connections: all 200, while another client stalled mid-request"
    ));
    let status = finish_partial(stalled)?;
    if status != "HTTP/1.1 400 Bad Request" {
        return Err(format!("a request cut short got `{status}`, not 400"));
    }
    session.note(format!("the stalled client gave up half-way: {status}"));
    // `/`, `/stats`, 404, 405, 400, the sequential ones, the stalled
    // one, and this one.
    expect_requests(session, &base, 5 + SEQUENTIAL + 2)?;
    expect_status(session, &[], &format!("{base}/quit"), 200)?;
    Ok(())
}

/// The demo: the page and its stats, then `/quit` (unless the machine stays
/// up for the user).
pub fn demo(session: &Session) -> Result<(), String> {
    let base = first_round(session)?;
    if session.stays_up {
        // `cargo xtask run`: the page stays up for the user's own curl.
        session.note(format!("the web guest keeps serving: curl {base}/"));
        return Ok(());
    }
    expect_status(session, &[], &format!("{base}/quit"), 200)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_numbers() {
        let text = "{\"uptime_ms\": 12, \"requests\": 26, \"netfront\": {\"tx_frames\": 3}}";
        assert_eq!(json_number(text, "requests"), Some(26));
        assert_eq!(json_number(text, "tx_frames"), Some(3));
        assert_eq!(json_number(text, "bytes"), None);
    }
}
