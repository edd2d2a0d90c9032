//! `net-bench`'s host side: the TCP sink the `nettest` bench guest sends
//! to (guest→host: its vif, the bridge, the driver domain's virtio-net NIC,
//! QEMU's user network, which maps 10.0.2.2:PORT to the host's
//! 127.0.0.1:PORT). It speaks nettest's protocol: read the stream to its
//! end, answer the byte count and the FNV-1a checksum (16 bytes,
//! little-endian), close; the guest times each transfer and checks the
//! answer. Once the guest printed its figure the sink notes the ratio to
//! domain 0's raw NIC transmit rate measured in the same boot.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use paravane_tests::bench::collect;

use super::Session;

/// The guest's figure, whose `BENCH` line ends the sink.
const GUEST_TO_HOST: &str = "guest_net_tcp_guest_to_host_mibs";
/// Domain 0's raw transmit figure (driver-domain `bench::net`).
const DD_RAW_TX: &str = "dd_net_tx_mibs";
/// How long the whole exchange may take (TCG, five runs per path).
const LIMIT: Duration = Duration::from_secs(600);

const FNV_INIT: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
}

/// Reads one stream to its end and answers count and checksum; returns
/// the count.
fn absorb(mut stream: TcpStream) -> Result<u64, String> {
    stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(60))))
        .map_err(|e| format!("sink socket: {e}"))?;
    let (mut count, mut hash) = (0u64, FNV_INIT);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                count += n as u64;
                hash = buf[..n].iter().fold(hash, |h, &b| fnv(h, b));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("sink: reading a stream: {e}")),
        }
    }
    let mut answer = [0u8; 16];
    answer[..8].copy_from_slice(&count.to_le_bytes());
    answer[8..].copy_from_slice(&hash.to_le_bytes());
    stream
        .write_all(&answer)
        .map_err(|e| format!("sink: answering: {e}"))?;
    Ok(count)
}

/// The `net-bench` scenario's driver.
pub fn sink(session: &Session) -> Result<(), String> {
    let listener = TcpListener::bind(("127.0.0.1", session.host_port))
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| {
            format!(
                "sink: cannot listen on 127.0.0.1:{}: {e}",
                session.host_port
            )
        })?;
    session.note(format!("TCP sink on 127.0.0.1:{}", session.host_port));
    let started = Instant::now();
    let mut streams = 0;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                let count = absorb(stream)?;
                streams += 1;
                session.note(format!("sink: stream {streams}: {count} bytes"));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let serial = session.serial();
                if serial.contains(&format!("BENCH name={GUEST_TO_HOST}")) || session.ended() {
                    break;
                }
                if started.elapsed() > LIMIT {
                    return Err(format!(
                        "no {GUEST_TO_HOST} figure within {} s",
                        LIMIT.as_secs()
                    ));
                }
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("sink: accept: {e}")),
        }
    }
    let figures = collect(&session.serial());
    let value = |name: &str| figures.iter().find(|f| f.name == name).map(|f| f.value);
    if let (Some(guest), Some(raw)) = (value(GUEST_TO_HOST), value(DD_RAW_TX)) {
        if raw > 0.0 {
            session.note(format!(
                "{GUEST_TO_HOST} {guest} MiB/s = {:.1}% of domain 0's raw NIC transmit ({DD_RAW_TX} {raw} MiB/s, same boot)",
                100.0 * guest / raw
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_answers_count_and_checksum() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let sender = thread::spawn(move || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
            s.write_all(&data).expect("write");
            s.shutdown(std::net::Shutdown::Write).expect("half-close");
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).expect("answer");
            let hash = data.iter().fold(FNV_INIT, |h, &b| fnv(h, b));
            assert_eq!(answer.len(), 16);
            assert_eq!(answer[..8], 100_000u64.to_le_bytes());
            assert_eq!(answer[8..], hash.to_le_bytes());
        });
        let (stream, _) = listener.accept().expect("accept");
        assert_eq!(absorb(stream).expect("absorb"), 100_000);
        sender.join().expect("sender");
    }
}
