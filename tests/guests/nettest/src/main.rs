//! `nettest`: TCP between two guests through their vifs (netfront, SPEC.md
//! §14) and the driver domain's bridge, with smoltcp as the TCP/IP stack.
//!
//! Command line: `role=server|client|bench|spoofer`, `ip=<a.b.c.d>` (a
//! /24); for the server `conns=<n>` (connections to serve, default 1); for
//! the client `server=<a.b.c.d>` and `bytes=<n>` (default 262144); for
//! `bench` also `runs=<n>` (default 5) and `host=<a.b.c.d>:<port>`, a TCP
//! sink outside (the host's, through the driver domain's NIC and QEMU's
//! user network, which maps 10.0.2.2 to the host's 127.0.0.1).
//!
//! The client connects to port 7 and sends `bytes` bytes of a known
//! pattern, then half-closes; the server checks every byte, answers with the
//! count and an FNV-1a checksum as 16 bytes and closes; the client compares
//! them with its own. Both print one line and power off; any mismatch
//! panics.
//!
//! `bench` does `runs` such transfers to the server guest (guest→guest,
//! through the bridge only) and `runs` to the host sink (guest→host,
//! through the bridge and the NIC), each timed with the TSC from connect to
//! the checked answer, and prints `BENCH` lines with the median
//! (`guest_net_tcp_guest_to_guest_mibs`, `guest_net_tcp_guest_to_host_mibs`)
//! and their ratio: the same stack and the same boot, one path longer.
//!
//! Waiting: the vif's port is masked and the loop blocks in
//! `sched_op(poll)` on it with smoltcp's next deadline as the timeout
//! (TIME-1 system time), so neither guest spins.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::devbus::{DEVBUS_KIND_NET, DEVBUS_STATE_INITIALISING};
use hypercall_abi::evtchn::Port;
use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::bench::{mib_per_second, rdtsc, Stats};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::devices::devbus;
use pv_guest_kit::devices::netfront::{find_vif, smoltcp_now, NetFront};
use pv_guest_kit::events;
use pv_guest_kit::hypercall::{sched_poll_until, sched_yield};
use pv_guest_kit::println;
use pv_guest_kit::time::{now_ns, tsc_hz};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};

pv_guest_kit::entry!(kmain);

const PORT: u16 = 7;
/// How long to wait for the vif when smoltcp wants to run again at once.
const BUSY_WAIT_NS: u64 = 50_000;

fn parse_ip(text: &str) -> Ipv4Address {
    text.parse()
        .unwrap_or_else(|_| panic!("nettest: bad IPv4 address `{text}`"))
}

/// The byte at position `i` of the stream.
fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

fn fnv(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3)
}

const FNV_INIT: u64 = 0xcbf2_9ce4_8422_2325;

/// The spoofer (NET-4): sends frames that claim another vif's MAC as their
/// source, which the backend must drop before its bridge learns anything
/// from them, and frames with its own MAC, which it must forward.
fn spoof(mut vif: NetFront, args: &Args<'_>) {
    const FORGED: u64 = 50;
    const HONEST: u64 = 10;
    let victim = parse_mac(args.get("victim").unwrap_or("02:00:00:00:00:01"));
    let own = vif.mac();
    let mut frame = [0u8; 60];
    // An ethertype nobody speaks (IEEE 802 local experimental).
    frame[12] = 0x88;
    frame[13] = 0xb5;
    let mut sent = 0;
    for i in 0..FORGED + HONEST {
        let forged = i < FORGED;
        // Forged frames go to the broadcast address, honest ones too.
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(if forged { &victim } else { &own });
        loop {
            match vif.transmit(&frame) {
                Ok(()) => break,
                Err(pv_guest_kit::devices::netfront::NetError::Busy) => sched_yield(),
                Err(e) => panic!("nettest: spoofer: transmit: {e}"),
            }
        }
        sent += 1;
    }
    // Wait until every tx request was answered.
    let deadline = now_ns() + 10_000_000_000;
    loop {
        vif.poll()
            .unwrap_or_else(|e| panic!("nettest: spoofer: {e}"));
        let s = vif.stats();
        if s.tx_frames == sent && vif.tx_idle() {
            break;
        }
        assert!(now_ns() < deadline, "nettest: spoofer: tx never completed");
        let _ = sched_poll_until(&[vif.port()], now_ns() + 10_000_000);
    }
    let s = vif.stats();
    assert_eq!(
        s.tx_errors, FORGED,
        "nettest: spoofer: forged frames were not all dropped"
    );
    println!(
        "nettest: spoofer: {FORGED} frames with a forged source MAC dropped, {HONEST} honest broadcasts forwarded"
    );
    vif.disconnect()
        .unwrap_or_else(|e| panic!("nettest: spoofer: disconnect: {e}"));
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for b in &mut mac {
        *b = parts
            .next()
            .and_then(|p| u8::from_str_radix(p, 16).ok())
            .unwrap_or_else(|| panic!("nettest: bad MAC `{text}`"));
    }
    mac
}

/// The interface, the vif under it and the sockets, driven together.
struct Net {
    iface: Interface,
    vif: NetFront,
    sockets: SocketSet<'static>,
    port: Port,
}

impl Net {
    /// Polls the stack and calls `step` until it returns true; panics after
    /// 60 s without it. Sleeps on the vif's port (or smoltcp's next timer)
    /// in between.
    fn drive(
        &mut self,
        what: &str,
        mut step: impl FnMut(&mut Interface, &mut SocketSet<'static>) -> bool,
    ) {
        let deadline = now_ns() + 60_000_000_000;
        loop {
            events::clear_pending(self.port);
            self.iface
                .poll(smoltcp_now(), &mut self.vif, &mut self.sockets);
            let finished = step(&mut self.iface, &mut self.sockets);
            // Hand over at once what the step queued, and the window it
            // opened by reading: a peer waiting for that update would
            // otherwise wait for this side's next wake-up.
            self.iface
                .poll(smoltcp_now(), &mut self.vif, &mut self.sockets);
            if finished {
                return;
            }
            assert!(now_ns() < deadline, "nettest: {what}: no progress for 60 s");
            // Sleep until the vif has news or smoltcp has a timer to serve.
            if !self.vif.has_work() {
                let delay = self
                    .iface
                    .poll_delay(smoltcp_now(), &self.sockets)
                    .unwrap_or(Duration::from_millis(100))
                    .min(Duration::from_millis(100));
                let until = now_ns() + delay.total_micros() * 1000;
                if delay.total_micros() > 0 {
                    let _ = sched_poll_until(&[self.port], until);
                } else {
                    // smoltcp wants to run again at once (e.g. it has more to
                    // send than the vif's free tx buffers take): wait for the
                    // vif's next event (a tx completion), briefly. Spinning
                    // on sched_yield here instead delayed the peer's and the
                    // driver domain's wake-ups by ~12 ms each (guest->guest
                    // 0.43 MiB/s instead of ~6.5 under TCG).
                    let _ = sched_poll_until(&[self.port], now_ns() + BUSY_WAIT_NS);
                }
            }
        }
    }
}

/// Sends `total` pattern bytes to `dest` from `local_port` over the socket
/// `handle`, half-closes and checks the 16-byte answer (count, FNV-1a).
/// Returns the TSC ticks from connect to the checked answer.
fn send_stream(
    net: &mut Net,
    handle: SocketHandle,
    dest: (IpAddress, u16),
    local_port: u16,
    total: u64,
) -> u64 {
    let (mut sent, mut hash) = (0u64, FNV_INIT);
    let mut answer = [0u8; 16];
    let mut answer_len = 0usize;
    let start = rdtsc();
    {
        let Net { iface, sockets, .. } = net;
        sockets
            .get_mut::<tcp::Socket>(handle)
            .connect(iface.context(), dest, local_port)
            .unwrap_or_else(|e| panic!("nettest: connect: {e:?}"));
    }
    net.drive("send", |_, sockets| {
        let sock = sockets.get_mut::<tcp::Socket>(handle);
        while sock.can_send() && sent < total {
            let n = sock
                .send(|buf| {
                    let n = buf.len().min((total - sent) as usize);
                    for (i, b) in buf[..n].iter_mut().enumerate() {
                        *b = pattern(sent + i as u64);
                        hash = fnv(hash, *b);
                    }
                    (n, n)
                })
                .unwrap_or_else(|e| panic!("nettest: send: {e:?}"));
            sent += n as u64;
            if sent == total {
                sock.close();
            }
        }
        while sock.can_recv() && answer_len < 16 {
            answer_len += sock
                .recv_slice(&mut answer[answer_len..])
                .unwrap_or_else(|e| panic!("nettest: recv: {e:?}"));
        }
        assert!(
            sock.is_open() || answer_len == 16,
            "nettest: the connection to {}:{} ended without an answer",
            dest.0,
            dest.1
        );
        answer_len == 16
    });
    let ticks = rdtsc() - start;
    let count = u64::from_le_bytes(answer[..8].try_into().unwrap_or([0; 8]));
    let theirs = u64::from_le_bytes(answer[8..].try_into().unwrap_or([0; 8]));
    assert_eq!(count, total, "nettest: the receiver counted {count} bytes");
    assert_eq!(theirs, hash, "nettest: checksums differ");
    ticks
}

/// One connection the server is receiving.
#[derive(Clone, Copy)]
struct Incoming {
    handle: SocketHandle,
    received: u64,
    hash: u64,
    answered: bool,
    connected: bool,
}

/// Serves `conns` connections on port 7, two at a time (so a client's next
/// connection finds a listener while the last one closes).
fn serve(net: &mut Net, ip: Ipv4Address, conns: u64) {
    let mut slots: Vec<Incoming> = (0..2)
        .map(|_| Incoming {
            handle: net.sockets.add(tcp_socket()),
            received: 0,
            hash: FNV_INIT,
            answered: false,
            connected: false,
        })
        .collect();
    let mut done = 0u64;
    println!("nettest: server listening on {ip}:{PORT}");
    net.drive("serve", |_, sockets| {
        for slot in slots.iter_mut() {
            let sock = sockets.get_mut::<tcp::Socket>(slot.handle);
            if !sock.is_open() {
                if slot.connected {
                    done += 1;
                    *slot = Incoming {
                        handle: slot.handle,
                        received: 0,
                        hash: FNV_INIT,
                        answered: false,
                        connected: false,
                    };
                }
                if done < conns {
                    sock.listen(PORT)
                        .unwrap_or_else(|e| panic!("nettest: listen: {e:?}"));
                }
                continue;
            }
            slot.connected |= sock.is_active();
            while sock.can_recv() {
                let (received, mut hash) = (slot.received, slot.hash);
                let got = sock
                    .recv(|buf| {
                        for (i, &b) in buf.iter().enumerate() {
                            let at = received + i as u64;
                            assert_eq!(b, pattern(at), "nettest: byte {at} corrupted");
                            hash = fnv(hash, b);
                        }
                        (buf.len(), buf.len())
                    })
                    .unwrap_or_else(|e| panic!("nettest: recv: {e:?}"));
                slot.received += got as u64;
                slot.hash = hash;
            }
            // The client half-closed: answer and close.
            if slot.connected
                && !slot.answered
                && sock.state() == tcp::State::CloseWait
                && !sock.can_recv()
            {
                let mut answer = [0u8; 16];
                answer[..8].copy_from_slice(&slot.received.to_le_bytes());
                answer[8..].copy_from_slice(&slot.hash.to_le_bytes());
                let n = sock
                    .send_slice(&answer)
                    .unwrap_or_else(|e| panic!("nettest: send: {e:?}"));
                assert_eq!(n, 16);
                slot.answered = true;
                sock.close();
                println!(
                    "nettest: server received {} bytes intact, checksum {:#018x}; answered",
                    slot.received, slot.hash
                );
            }
        }
        done >= conns
    });
}

fn tcp_socket() -> tcp::Socket<'static> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 32 * 1024]),
        tcp::SocketBuffer::new(vec![0; 32 * 1024]),
    );
    // Acknowledge at once: on a bridge between two domains a delayed ACK
    // only stalls the sender's window.
    socket.set_ack_delay(None);
    socket
}

/// Times `runs` transfers of `bytes` to `dest`; prints and returns the
/// median in hundredths of MiB/s.
fn bench_path(
    net: &mut Net,
    name: &str,
    dest: (IpAddress, u16),
    first_port: u16,
    runs: u64,
    bytes: u64,
) -> u64 {
    let handle = net.sockets.add(tcp_socket());
    let mut samples = Vec::new();
    for i in 0..runs {
        samples.push(send_stream(net, handle, dest, first_port + i as u16, bytes));
        // Let the FIN exchange finish before the next connection.
        net.drive("close", |_, sockets| {
            !sockets.get::<tcp::Socket>(handle).is_open()
        });
    }
    net.sockets.remove(handle);
    let hz = tsc_hz();
    let stats = Stats::from_samples(&mut samples).unwrap_or_else(|| panic!("nettest: no runs"));
    let best = mib_per_second(bytes, stats.min, hz);
    let median = mib_per_second(bytes, stats.median, hz);
    println!(
        "{name}: best {best} median {median} MiB/s ({runs} runs of {bytes} bytes to {}:{}, ticks min {} median {})",
        dest.0,
        dest.1,
        stats.min,
        stats.median
    );
    println!("BENCH name={name} value={median} unit=MiB/s");
    median.0
}

/// Waits (up to 10 s, looking every 10 ms: other domains' records raise no
/// event here) until no other vif of `backend` is still initialising, so
/// the first frames (ARP) find the peer on the bridge instead of being
/// flooded to nobody and dropped.
fn wait_for_peers(me: u32, backend: hypercall_abi::DomId, port: Port) {
    let deadline = now_ns() + 10_000_000_000;
    loop {
        let records = devbus::records().unwrap_or_else(|e| panic!("nettest: devbus: {e}"));
        let waiting = records.iter().any(|r| {
            r.kind == DEVBUS_KIND_NET
                && r.backend == backend
                && r.id != me
                && r.state == DEVBUS_STATE_INITIALISING
        });
        if !waiting || now_ns() >= deadline {
            return;
        }
        let _ = sched_poll_until(&[port], now_ns() + 10_000_000);
    }
}

fn parse_endpoint(text: &str) -> (IpAddress, u16) {
    let (ip, port) = text
        .split_once(':')
        .unwrap_or_else(|| panic!("nettest: `{text}` is not <ip>:<port>"));
    let port = port
        .parse()
        .unwrap_or_else(|_| panic!("nettest: bad port in `{text}`"));
    (IpAddress::Ipv4(parse_ip(ip)), port)
}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let role = args.get("role");
    if !matches!(role, Some("server" | "client" | "bench" | "spoofer")) {
        panic!("nettest: role must be server, client, bench or spoofer, not {role:?}");
    }
    let ip = parse_ip(
        args.get("ip")
            .unwrap_or_else(|| panic!("nettest: ip= missing")),
    );
    if let Err(e) = devbus::watch() {
        panic!("nettest: VIRQ_DEVBUS: {e}");
    }
    let mut record = None;
    events::wait_until(|| {
        record = find_vif(si.domid).unwrap_or_else(|e| panic!("nettest: devbus: {e}"));
        record.is_some()
    });
    let Some(record) = record else { return };
    let mut vif = NetFront::connect(record.id).unwrap_or_else(|e| panic!("nettest: connect: {e}"));
    let mac = vif.mac();
    let port = vif.port();
    events::mask(port);
    println!(
        "nettest: vif up, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, {ip}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    );
    if role == Some("spoofer") {
        spoof(vif, &args);
        return;
    }

    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = u64::from(si.domid) * 0x9e37_79b9 + now_ns();
    let mut iface = Interface::new(config, &mut vif, smoltcp_now());
    iface.update_ip_addrs(|addrs| {
        let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
    });
    let mut net = Net {
        iface,
        vif,
        sockets: SocketSet::new(vec![]),
        port,
    };
    let total: u64 = args.get_u64("bytes").unwrap_or(262_144);
    if role != Some("server") {
        wait_for_peers(record.id, record.backend, port);
    }
    match role {
        Some("server") => serve(&mut net, ip, args.get_u64("conns").unwrap_or(1).max(1)),
        Some("client") => {
            let server_ip = parse_ip(
                args.get("server")
                    .unwrap_or_else(|| panic!("nettest: server= missing")),
            );
            println!("nettest: client connecting to {server_ip}:{PORT}");
            let handle = net.sockets.add(tcp_socket());
            let start_ns = now_ns();
            send_stream(
                &mut net,
                handle,
                (IpAddress::Ipv4(server_ip), PORT),
                49_152,
                total,
            );
            let ms = (now_ns() - start_ns) / 1_000_000;
            println!(
                "nettest: client sent {total} bytes; the server confirmed count and checksum ({ms} ms)"
            );
        }
        _ => {
            let server_ip = parse_ip(
                args.get("server")
                    .unwrap_or_else(|| panic!("nettest: server= missing")),
            );
            let host = parse_endpoint(
                args.get("host")
                    .unwrap_or_else(|| panic!("nettest: host= missing")),
            );
            let runs = args.get_u64("runs").unwrap_or(5).clamp(1, 64);
            let to_guest = bench_path(
                &mut net,
                "guest_net_tcp_guest_to_guest_mibs",
                (IpAddress::Ipv4(server_ip), PORT),
                49_152,
                runs,
                total,
            );
            let to_host = bench_path(
                &mut net,
                "guest_net_tcp_guest_to_host_mibs",
                host,
                50_152,
                runs,
                total,
            );
            let ratio = pv_guest_kit::bench::Hundredths::ratio(to_host, to_guest).map_or_else(
                || alloc::string::String::from("?"),
                |r| alloc::format!("{r}"),
            );
            println!(
                "nettest: bench: guest->host / guest->guest = {ratio} (same boot, same stack; the host path adds the NIC and QEMU's user network)"
            );
        }
    }
    // Let the last segments (the FIN and its ACK) leave.
    let linger = now_ns() + 200_000_000;
    while now_ns() < linger {
        events::clear_pending(port);
        net.iface
            .poll(smoltcp_now(), &mut net.vif, &mut net.sockets);
        let _ = sched_poll_until(&[port], (now_ns() + 20_000_000).min(linger));
    }
    let Net { iface, vif, .. } = net;
    let s = vif.stats();
    println!(
        "nettest: vif counters: {} frames sent ({} not delivered), {} received",
        s.tx_frames, s.tx_errors, s.rx_frames
    );
    drop(iface);
    vif.disconnect()
        .unwrap_or_else(|e| panic!("nettest: disconnect: {e}"));
    println!("nettest: vif disconnected, grants ended");
}
