//! `web`: an HTTP/1.1 server on smoltcp over netfront (SPEC.md §14). With
//! the driver domain's `nic=virtio-net` its vif shares a bridge with the
//! physical NIC, so the host reaches it through QEMU's user network
//! (`hostfwd=tcp:127.0.0.1:PORT-10.0.2.15:80`).
//!
//! Command line: `ip=<a.b.c.d>` (default 10.0.2.15, a /24) or `ip=dhcp`
//! (a lease from the network's DHCP server, QEMU's user network for one,
//! renewed as smoltcp's DHCP socket sees fit), `gw=<a.b.c.d>` (default
//! 10.0.2.2, QEMU's user-network gateway; with DHCP the lease's router),
//! `port=<n>` (default 80).
//!
//! It serves `/` (an HTML page), `/stats` (JSON: uptime, requests,
//! bytes, netfront counters) and `/quit` (answers, then the guest
//! disconnects its vif and powers off); another path is 404, another
//! method 405, a malformed request 400 (parsing and routing: [`web::http`]).
//! One request per connection; [`SLOTS`] connections at a time, each
//! aborted if it has not finished within [`CONNECTION_LIMIT_NS`].
//!
//! Waiting: the vif's port is masked and the loop blocks in
//! `sched_op(poll)` on it with smoltcp's next deadline as the timeout.
#![cfg_attr(target_os = "none", no_std, no_main)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::devices::devbus;
use pv_guest_kit::devices::netfront::{find_vif, smoltcp_now, NetFront};
use pv_guest_kit::events;
use pv_guest_kit::hypercall::sched_poll_until;
use pv_guest_kit::println;
use pv_guest_kit::time::now_ns;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, tcp};
use smoltcp::time::Duration;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use web::http::{self, Parsed, Response, Routed, Stats, MAX_HEAD};

pv_guest_kit::entry!(kmain);

/// Connections served at once (listening sockets on the port).
const SLOTS: usize = 4;
/// A connection not finished after this long is aborted.
const CONNECTION_LIMIT_NS: u64 = 30_000_000_000;

fn parse_ip(text: &str) -> Ipv4Address {
    text.parse()
        .unwrap_or_else(|_| panic!("web: bad IPv4 address `{text}`"))
}

/// One socket and the connection it holds.
struct Slot {
    handle: SocketHandle,
    /// A connection is established (or was, until it ends).
    active: bool,
    since_ns: u64,
    received: Vec<u8>,
    answer: Vec<u8>,
    sent: usize,
    answered: bool,
    closed: bool,
    quit: bool,
}

impl Slot {
    fn new(handle: SocketHandle) -> Slot {
        Slot {
            handle,
            active: false,
            since_ns: 0,
            received: Vec::new(),
            answer: Vec::new(),
            sent: 0,
            answered: false,
            closed: false,
            quit: false,
        }
    }

    fn reset(&mut self) {
        *self = Slot::new(self.handle);
    }
}

/// The server's counters and identity.
struct Server {
    name: alloc::string::String,
    started_ns: u64,
    stats: Stats,
    quitting: bool,
}

impl Server {
    /// Answers what `slot` received so far, if it amounts to a request.
    fn answer(&mut self, slot: &mut Slot, peer_done: bool, vif: &NetFront) {
        let routed = match http::parse(&slot.received) {
            Parsed::Incomplete if !peer_done => return,
            Parsed::Incomplete if slot.received.is_empty() => {
                // Connected and left without a word: nothing to answer.
                slot.answered = true;
                return;
            }
            Parsed::Incomplete | Parsed::Bad => {
                self.stats.requests += 1;
                println!("web: malformed request -> 400");
                Routed::Reply(Response::bad_request())
            }
            Parsed::Request(req) => {
                let s = vif.stats();
                self.stats.requests += 1;
                self.stats.uptime_ms = now_ns().saturating_sub(self.started_ns) / 1_000_000;
                self.stats.tx_frames = s.tx_frames;
                self.stats.tx_errors = s.tx_errors;
                self.stats.rx_frames = s.rx_frames;
                self.stats.rx_errors = s.rx_errors;
                let routed = http::route(&req, &self.name, &self.stats);
                let response = match &routed {
                    Routed::Reply(r) | Routed::ReplyAndQuit(r) => r,
                };
                println!(
                    "web: {} {} -> {} ({} body bytes)",
                    req.method,
                    req.path,
                    response.status,
                    response.body.len()
                );
                routed
            }
        };
        let response = match routed {
            Routed::Reply(r) => r,
            Routed::ReplyAndQuit(r) => {
                slot.quit = true;
                r
            }
        };
        slot.answer = response.to_bytes();
        self.stats.bytes_sent += slot.answer.len() as u64;
        slot.answered = true;
    }

    /// Serves one slot: listens again once its connection ended, reads the
    /// request, answers it and closes.
    fn serve(&mut self, slot: &mut Slot, sock: &mut tcp::Socket<'_>, port: u16, vif: &NetFront) {
        if !sock.is_open() {
            if slot.active {
                self.quitting |= slot.quit;
                slot.reset();
            }
            if !self.quitting {
                sock.listen(port)
                    .unwrap_or_else(|e| panic!("web: listen: {e:?}"));
            }
            return;
        }
        if self.quitting && sock.state() == tcp::State::Listen {
            // No new connections once `/quit` was answered.
            sock.close();
            return;
        }
        if !slot.active {
            if !sock.is_active() {
                return;
            }
            slot.active = true;
            slot.since_ns = now_ns();
        }
        while sock.can_recv() {
            let room = (MAX_HEAD + 1).saturating_sub(slot.received.len());
            let answered = slot.answered;
            let n = sock
                .recv(|buf| {
                    let n = buf.len();
                    if !answered {
                        slot.received.extend_from_slice(&buf[..n.min(room)]);
                    }
                    (n, n)
                })
                .unwrap_or(0);
            self.stats.bytes_received += n as u64;
            if n == 0 {
                break;
            }
        }
        // Until the handshake completes nothing can be received yet.
        if !slot.answered && sock.state() != tcp::State::SynReceived {
            self.answer(slot, !sock.may_recv(), vif);
        }
        if slot.answered {
            while slot.sent < slot.answer.len() && sock.can_send() {
                match sock.send_slice(&slot.answer[slot.sent..]) {
                    Ok(n) if n > 0 => slot.sent += n,
                    _ => break,
                }
            }
            if slot.sent == slot.answer.len() && !slot.closed {
                sock.close();
                slot.closed = true;
            }
        }
        let now = now_ns();
        if now.saturating_sub(slot.since_ns) > CONNECTION_LIMIT_NS {
            println!(
                "web: a connection took longer than 30 s ({} -> {now} ns): aborted",
                slot.since_ns
            );
            sock.abort();
        }
    }
}

/// Applies a DHCP event to the interface; returns the address and router it
/// now has.
fn apply_dhcp(
    iface: &mut Interface,
    event: dhcpv4::Event<'_>,
) -> Option<(Ipv4Cidr, Option<Ipv4Address>)> {
    match event {
        dhcpv4::Event::Configured(config) => {
            iface.update_ip_addrs(|addrs| {
                addrs.clear();
                let _ = addrs.push(IpCidr::Ipv4(config.address));
            });
            match config.router {
                Some(router) => {
                    let _ = iface.routes_mut().add_default_ipv4_route(router);
                }
                None => {
                    iface.routes_mut().remove_default_ipv4_route();
                }
            }
            match config.router {
                Some(router) => println!("web: DHCP lease {}, gateway {router}", config.address),
                None => println!("web: DHCP lease {}, no gateway", config.address),
            }
            Some((config.address, config.router))
        }
        // smoltcp also says so when it starts, before any lease.
        dhcpv4::Event::Deconfigured if iface.ip_addrs().is_empty() => None,
        dhcpv4::Event::Deconfigured => {
            iface.update_ip_addrs(|addrs| addrs.clear());
            iface.routes_mut().remove_default_ipv4_route();
            println!("web: DHCP lease lost");
            None
        }
    }
}

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let use_dhcp = args.get("ip") == Some("dhcp");
    let mut ip = parse_ip(match args.get("ip") {
        Some("dhcp") | None => "10.0.2.15",
        Some(text) => text,
    });
    let mut gw = parse_ip(args.get("gw").unwrap_or("10.0.2.2"));
    let port = u16::try_from(args.get_u64("port").unwrap_or(80))
        .unwrap_or_else(|_| panic!("web: bad port"));
    if let Err(e) = devbus::watch() {
        panic!("web: VIRQ_DEVBUS: {e}");
    }
    let mut record = None;
    events::wait_until(|| {
        record = find_vif(si.domid).unwrap_or_else(|e| panic!("web: devbus: {e}"));
        record.is_some()
    });
    let Some(record) = record else { return };
    let mut vif = NetFront::connect(record.id).unwrap_or_else(|e| panic!("web: connect: {e}"));
    let mac = vif.mac();
    let vif_port = vif.port();
    events::mask(vif_port);

    let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    config.random_seed = u64::from(si.domid) * 0x9e37_79b9 + now_ns();
    let mut iface = Interface::new(config, &mut vif, smoltcp_now());
    let mut sockets = SocketSet::new(vec![]);
    let dhcp = use_dhcp.then(|| sockets.add(dhcpv4::Socket::new()));
    if let Some(handle) = dhcp {
        println!("web: asking for a DHCP lease");
        let deadline = now_ns() + 30_000_000_000;
        loop {
            events::clear_pending(vif_port);
            iface.poll(smoltcp_now(), &mut vif, &mut sockets);
            if let Some(event) = sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
                if let Some((cidr, router)) = apply_dhcp(&mut iface, event) {
                    ip = cidr.address();
                    gw = router.unwrap_or(gw);
                    break;
                }
            }
            assert!(now_ns() < deadline, "web: no DHCP lease within 30 s");
            let delay = iface
                .poll_delay(smoltcp_now(), &sockets)
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            let _ = sched_poll_until(&[vif_port], now_ns() + delay.total_micros() * 1000 + 1000);
        }
    } else {
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(IpAddress::Ipv4(ip), 24));
        });
        iface
            .routes_mut()
            .add_default_ipv4_route(gw)
            .unwrap_or_else(|e| panic!("web: default route: {e:?}"));
    }
    let mut slots: Vec<Slot> = (0..SLOTS)
        .map(|_| {
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0; 8 * 1024]),
                tcp::SocketBuffer::new(vec![0; 16 * 1024]),
            );
            Slot::new(sockets.add(socket))
        })
        .collect();
    let mut server = Server {
        name: alloc::format!("domain {}", si.domid),
        started_ns: now_ns(),
        stats: Stats::default(),
        quitting: false,
    };
    println!(
        "web: vif up, MAC {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    );
    println!("web: listening on http://{ip}:{port}/ (gateway {gw})");
    loop {
        events::clear_pending(vif_port);
        iface.poll(smoltcp_now(), &mut vif, &mut sockets);
        if let Some(handle) = dhcp {
            if let Some(event) = sockets.get_mut::<dhcpv4::Socket>(handle).poll() {
                // A renewal keeps the address; a new one is printed.
                let _ = apply_dhcp(&mut iface, event);
            }
        }
        for slot in &mut slots {
            let sock = sockets.get_mut::<tcp::Socket>(slot.handle);
            server.serve(slot, sock, port, &vif);
        }
        // Flush what the slots queued before deciding to sleep or stop.
        iface.poll(smoltcp_now(), &mut vif, &mut sockets);
        if server.quitting
            && slots
                .iter()
                .all(|s| !sockets.get::<tcp::Socket>(s.handle).is_open())
        {
            break;
        }
        if !vif.has_work() {
            let delay = iface
                .poll_delay(smoltcp_now(), &sockets)
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            if delay.total_micros() > 0 {
                let _ = sched_poll_until(&[vif_port], now_ns() + delay.total_micros() * 1000);
            } else {
                // smoltcp wants to run again at once (e.g. the vif's tx
                // buffers are all in flight): wait briefly for the vif's
                // next event rather than spin on sched_yield, which delays
                // the driver domain's wake-up.
                let _ = sched_poll_until(&[vif_port], now_ns() + 50_000);
            }
        }
    }
    // Let the last segments (the FIN and its ACK) leave.
    let linger = now_ns() + 200_000_000;
    while now_ns() < linger {
        events::clear_pending(vif_port);
        iface.poll(smoltcp_now(), &mut vif, &mut sockets);
        let _ = sched_poll_until(&[vif_port], (now_ns() + 20_000_000).min(linger));
    }
    let s = vif.stats();
    println!(
        "web: served {} requests ({} bytes in, {} bytes out); vif: {} frames sent ({} not delivered), {} received",
        server.stats.requests,
        server.stats.bytes_received,
        server.stats.bytes_sent,
        s.tx_frames,
        s.tx_errors,
        s.rx_frames
    );
    drop(iface);
    vif.disconnect()
        .unwrap_or_else(|e| panic!("web: disconnect: {e}"));
    println!("web: vif disconnected, powering off");
}
