//! The management-protocol client (SPEC.md §17): a unix-socket connection to
//! the management UART that QEMU exposes, request/reply matching by sequence
//! number, `HELLO` with retries (MGMT-2: the driver domain drops a frame that
//! a previous client left half-sent once the line has been quiet), image
//! upload into the driver domain's content-addressed cache (MGMT-4).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use hypercall_abi::mgmt::{
    encode_frame, exact, reply_kind, sha256, split, Decoder, ErrorReply, Hello, HelloReply,
    ImageRef, ImageStatus, IMAGE_CHUNK, KIND_ERROR, KIND_HELLO, KIND_IMAGE_PUT, KIND_IMAGE_QUERY,
    MAX_FRAME, MGMT_VERSION,
};
use zerocopy::{FromBytes, IntoBytes};

/// A connection to the toolstack.
pub struct Client {
    stream: UnixStream,
    decoder: Box<Decoder>,
    seq: u32,
    timeout: Duration,
    /// What the server said to `HELLO`.
    pub server: HelloReply,
}

/// How long one `HELLO` attempt waits before it is sent again.
const HELLO_RETRY: Duration = Duration::from_millis(1500);

impl Client {
    /// Connects to `socket` and says hello; fails with one line.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, String> {
        let stream = UnixStream::connect(socket).map_err(|e| {
            format!(
                "cannot connect to {}: {e} (is the machine running? set --socket or PVCTL_SOCKET)",
                socket.display()
            )
        })?;
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .map_err(|e| format!("socket: {e}"))?;
        // A sequence number unlikely to match a stale reply still in the pipe.
        let seq = std::process::id().wrapping_mul(0x9e37_79b9)
            ^ (Instant::now().elapsed().subsec_nanos());
        let mut client = Client {
            stream,
            decoder: Box::new(Decoder::new()),
            seq: seq & 0x7fff_ffff,
            timeout,
            server: HelloReply::default(),
        };
        let hello = Hello {
            protocol: u32::from(MGMT_VERSION),
            pad: 0,
        };
        let deadline = Instant::now() + timeout;
        let seq = client.next_seq();
        loop {
            client.send(KIND_HELLO, seq, &[hello.as_bytes()])?;
            let wait = HELLO_RETRY.min(deadline.saturating_duration_since(Instant::now()));
            match client.receive(KIND_HELLO, seq, wait) {
                Ok(Some(payload)) => {
                    client.server = exact::<HelloReply>(&payload)
                        .ok_or("the driver domain sent a malformed HELLO reply")?;
                    if client.server.protocol != u32::from(MGMT_VERSION) {
                        return Err(format!(
                            "the driver domain speaks management protocol {}, pvctl speaks {MGMT_VERSION}",
                            client.server.protocol
                        ));
                    }
                    return Ok(client);
                }
                Ok(None) if Instant::now() < deadline => continue,
                Ok(None) => {
                    return Err(format!(
                        "no answer from the driver domain on {} within {} s (is it running with toolstack=1?)",
                        socket.display(),
                        timeout.as_secs()
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, kind: u16, seq: u32, parts: &[&[u8]]) -> Result<(), String> {
        let mut frame = vec![0u8; MAX_FRAME];
        let n = encode_frame(kind, seq, parts, &mut frame)
            .map_err(|e| format!("cannot encode a request: {e:?}"))?;
        self.stream
            .write_all(&frame[..n])
            .map_err(|e| format!("cannot send to the driver domain: {e}"))
    }

    /// The answer to (`kind`, `seq`) among the decoded frames, if there is one
    /// (other frames are stale replies to someone else's request: dropped).
    fn take_answer(&mut self, kind: u16, seq: u32) -> Option<Result<Vec<u8>, String>> {
        while let Some((h, payload)) = self.decoder.frame() {
            let answer = if h.seq != seq {
                None
            } else if h.kind == reply_kind(kind) {
                Some(Ok(payload.to_vec()))
            } else if h.kind == KIND_ERROR {
                Some(Err(error_text(payload)))
            } else {
                None
            };
            self.decoder.pop();
            if answer.is_some() {
                return answer;
            }
        }
        None
    }

    /// Waits up to `wait` for the reply to (`kind`, `seq`); `Ok(None)` on
    /// timeout, `Err` with the server's line for an `ERROR` reply.
    fn receive(&mut self, kind: u16, seq: u32, wait: Duration) -> Result<Option<Vec<u8>>, String> {
        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 4096];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            // Feed what was read; a complete frame stops the decoder until popped.
            let mut at = 0;
            loop {
                if let Some(answer) = self.take_answer(kind, seq) {
                    return answer.map(Some);
                }
                if at >= pending.len() {
                    break;
                }
                at += self.decoder.push(&pending[at..]);
            }
            pending.clear();
            if Instant::now() >= deadline {
                return Ok(None);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err("the management socket closed (the machine ended?)".into()),
                Ok(n) => pending.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("cannot read from the driver domain: {e}")),
            }
        }
    }

    /// Sends a request and waits for its reply's payload.
    pub fn call(&mut self, kind: u16, parts: &[&[u8]]) -> Result<Vec<u8>, String> {
        let seq = self.next_seq();
        self.send(kind, seq, parts)?;
        match self.receive(kind, seq, self.timeout)? {
            Some(payload) => Ok(payload),
            None => Err(format!(
                "no answer from the driver domain within {} s",
                self.timeout.as_secs()
            )),
        }
    }

    /// Sends `image` unless the driver domain already has it; returns its
    /// digest and whether bytes were sent.
    pub fn upload(&mut self, image: &[u8]) -> Result<([u8; 32], bool), String> {
        let digest = sha256(image);
        let mut reference = ImageRef {
            digest,
            total_len: image.len() as u64,
            offset: 0,
        };
        let mut status = self.image_status(KIND_IMAGE_QUERY, &reference, &[])?;
        let sent = status.complete == 0;
        while status.complete == 0 {
            let at = status.have as usize;
            if at >= image.len() {
                return Err("the driver domain holds the whole image but did not accept it".into());
            }
            let end = (at + IMAGE_CHUNK).min(image.len());
            reference.offset = at as u64;
            status = self.image_status(KIND_IMAGE_PUT, &reference, &image[at..end])?;
            if status.complete == 0 && status.have as usize != end {
                return Err(format!(
                    "image upload went wrong: sent up to {end}, the driver domain holds {}",
                    status.have
                ));
            }
        }
        Ok((digest, sent))
    }

    fn image_status(
        &mut self,
        kind: u16,
        reference: &ImageRef,
        bytes: &[u8],
    ) -> Result<ImageStatus, String> {
        let payload = self.call(kind, &[reference.as_bytes(), bytes])?;
        exact::<ImageStatus>(&payload).ok_or_else(|| "malformed image status".to_owned())
    }
}

/// The line of an `ERROR` payload.
pub fn error_text(payload: &[u8]) -> String {
    match split::<ErrorReply>(payload) {
        Some((head, rest)) => {
            let text = String::from_utf8_lossy(&rest[..rest.len().min(head.len as usize)]);
            text.lines().next().unwrap_or("").to_owned()
        }
        None => "the driver domain sent a malformed error".into(),
    }
}

/// Reads a reply made of a `T` and `count` `U`s.
pub fn split_list<T: FromBytes, U: FromBytes>(
    payload: &[u8],
    count: impl Fn(&T) -> usize,
) -> Option<(T, Vec<U>)> {
    let (head, mut rest) = split::<T>(payload)?;
    let mut items = Vec::new();
    for _ in 0..count(&head) {
        let (item, after) = split::<U>(rest)?;
        items.push(item);
        rest = after;
    }
    rest.is_empty().then_some((head, items))
}
