//! The run-time toolstack of the driver domain (`toolstack=1`): it serves
//! the management protocol (SPEC.md §17) on the management UART that hv-core
//! lends it (TS-13) and does what `pvctl` asks — build domains from uploaded
//! images with their disks and NICs ([`builder`]), list, pause, destroy
//! them, copy their consoles out ([`console`]), read hv-core's log, power
//! the machine off.
//!
//! It runs inside the backends' event loop
//! ([`crate::backend::Backends::run_until`]): every round calls
//! [`Toolstack::poll`], and since the UART raises no interrupt the loop arms
//! the vCPU timer ([`Toolstack::arm_timer`]) to come back every millisecond
//! while a client talks and every 50 ms when the line is quiet.
//!
//! # Invariants
//! - One reply per request frame, sent in order; a request never blocks the
//!   loop (the backends keep serving while `pvctl` talks).
//! - A half-sent frame is dropped after [`QUIET_NS`] without a byte
//!   (MGMT-2), so a client that went away mid-frame cannot wedge the next.
//! - A `CREATE` that fails leaves nothing behind ([`builder`]).

pub mod builder;
pub mod console;
pub mod images;

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use hypercall_abi::evtchn::{VIRQ_GUEST_CONSOLE, VIRQ_TIMER};
use hypercall_abi::mgmt::*;
use hypercall_abi::sched::SHUTDOWN_POWEROFF;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::bench::{rdtsc, Stats};
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::println;
use pv_guest_kit::time::{now_ns, tsc_hz};
use pv_guest_kit::toolstack as ts;
use zerocopy::IntoBytes;

use crate::backend::Backends;
use console::ConsoleLog;
use images::ImageCache;

/// A partial frame is dropped after this long without a byte.
pub const QUIET_NS: u64 = 500_000_000;
/// Poll period while a client talks (or replies wait to go out).
const ACTIVE_PERIOD_NS: u64 = 1_000_000;
/// Poll period when the line is quiet.
const IDLE_PERIOD_NS: u64 = 50_000_000;
/// How long after the last byte the line counts as active.
const ACTIVE_FOR_NS: u64 = 2_000_000_000;
/// How long a domain asked to shut down may take before it is destroyed.
const SHUTDOWN_GRACE_NS: u64 = 5_000_000_000;
/// Ended domains whose console logs are kept.
const ENDED_KEPT: usize = 16;

static TIMER_FIRED: AtomicBool = AtomicBool::new(false);
static CONSOLE_DIRTY: AtomicBool = AtomicBool::new(true);

fn on_timer(_port: Port) {
    TIMER_FIRED.store(true, Ordering::Release);
}

fn on_guest_console(_port: Port) {
    CONSOLE_DIRTY.store(true, Ordering::Release);
}

/// The armed timer, for the event loop's wait condition.
#[derive(Clone, Copy, Debug)]
pub struct Wake;

impl Wake {
    /// Whether the timer fired since it was armed.
    pub fn fired(self) -> bool {
        TIMER_FIRED.load(Ordering::Acquire)
    }
}

/// One create's figures, in TSC cycles.
#[derive(Clone, Copy, Debug)]
struct CreateSample {
    toolstack: u64,
    hypervisor: u64,
    /// From the request to the domain's first console output.
    first_output: u64,
}

/// Picks one figure of a sample.
type Pick = fn(&CreateSample) -> u64;

/// A domain this toolstack created.
struct Managed {
    name: String,
    log: ConsoleLog,
    ended: bool,
    /// Set while its first output has not been seen: (request TSC, toolstack
    /// cycles, hypervisor cycles).
    pending_bench: Option<(u64, u64, u64)>,
    shutdown_deadline: Option<u64>,
    ended_order: u64,
}

/// The toolstack's state.
pub struct Toolstack {
    me: DomId,
    decoder: Box<Decoder>,
    tx: VecDeque<u8>,
    last_rx_ns: u64,
    images: ImageCache,
    managed: BTreeMap<DomId, Managed>,
    samples: Vec<CreateSample>,
    poweroff: bool,
    next_console_poll_ns: u64,
    ended_count: u64,
    console_virq: bool,
}

fn cycles_to_ns(cycles: u64) -> u64 {
    let hz = tsc_hz().max(1);
    (u128::from(cycles) * 1_000_000_000 / u128::from(hz)) as u64
}

/// A request's outcome: the reply payload, or an errno and one line.
type Outcome = Result<Vec<u8>, (Errno, String)>;

fn reply_of<T: IntoBytes + zerocopy::Immutable>(value: &T) -> Outcome {
    Ok(value.as_bytes().to_vec())
}

impl Toolstack {
    /// Sets the toolstack up: binds the vCPU timer (and, if hv-core offers
    /// it, `VIRQ_GUEST_CONSOLE`).
    pub fn start(me: DomId) -> Toolstack {
        match events::bind_virq(VIRQ_TIMER) {
            Ok(port) => events::set_handler(port, on_timer),
            Err(e) => panic!("toolstack: cannot bind VIRQ_TIMER: {e}"),
        }
        let console_virq = match events::bind_virq(VIRQ_GUEST_CONSOLE) {
            Ok(port) => {
                events::set_handler(port, on_guest_console);
                true
            }
            Err(_) => false,
        };
        println!(
            "toolstack: serving management protocol {MGMT_VERSION} on the management UART (COM2)"
        );
        Toolstack {
            me,
            decoder: Box::new(Decoder::new()),
            tx: VecDeque::new(),
            last_rx_ns: 0,
            images: ImageCache::new(),
            managed: BTreeMap::new(),
            samples: Vec::new(),
            poweroff: false,
            next_console_poll_ns: 0,
            ended_count: 0,
            console_virq,
        }
    }

    /// Whether `pvctl poweroff` asked to end and the reply went out.
    pub fn finished(&self) -> bool {
        self.poweroff && self.tx.is_empty()
    }

    /// Arms the vCPU timer for the next poll.
    pub fn arm_timer(&self) -> Wake {
        let now = now_ns();
        let active = !self.tx.is_empty()
            || self.decoder.partial()
            || now.saturating_sub(self.last_rx_ns) < ACTIVE_FOR_NS;
        let period = if active {
            ACTIVE_PERIOD_NS
        } else {
            IDLE_PERIOD_NS
        };
        TIMER_FIRED.store(false, Ordering::Release);
        if let Err(e) = pv_guest_kit::hypercall::set_timer(now + period) {
            println!("toolstack: set_timer: {e}");
        }
        Wake
    }

    /// One round: reads the line, answers complete requests, sends replies,
    /// copies consoles out. Returns whether anything moved.
    pub fn poll(&mut self, backends: &mut Backends) -> bool {
        let now = now_ns();
        let mut progress = false;
        let mut buf = [0u8; 4096];
        for _ in 0..64 {
            let n = match ts::mgmt_read(&mut buf) {
                Ok(n) => n,
                Err(e) => {
                    println!("toolstack: mgmt_read: {e}");
                    0
                }
            };
            if n == 0 {
                break;
            }
            progress = true;
            self.last_rx_ns = now;
            let mut at = 0;
            while at < n {
                at += self.decoder.push(&buf[at..n]);
                self.handle_frames(backends);
            }
        }
        if self.decoder.partial() && now.saturating_sub(self.last_rx_ns) > QUIET_NS {
            self.decoder.reset();
            println!(
                "toolstack: dropped a half-sent frame ({} bytes skipped so far)",
                self.decoder.skipped()
            );
        }
        progress |= self.flush();
        if CONSOLE_DIRTY.swap(false, Ordering::AcqRel) || now >= self.next_console_poll_ns {
            self.poll_consoles();
            // Without VIRQ_GUEST_CONSOLE, poll often; with it, as a fallback.
            let period = if self.console_virq {
                1_000_000_000
            } else {
                20_000_000
            };
            self.next_console_poll_ns = now + period;
        }
        self.enforce_shutdowns(now);
        progress
    }

    fn handle_frames(&mut self, backends: &mut Backends) {
        while let Some((header, payload)) = self.decoder.frame() {
            let payload = payload.to_vec();
            self.decoder.pop();
            let outcome = self.handle(header, &payload, backends);
            let (kind, body, errno_line) = match outcome {
                Ok(body) => (reply_kind(header.kind), body, None),
                Err((errno, line)) => {
                    let head = ErrorReply {
                        errno: u32::from(errno.0),
                        len: line.len() as u32,
                    };
                    let mut body = head.as_bytes().to_vec();
                    body.extend_from_slice(line.as_bytes());
                    (KIND_ERROR, body, Some(line))
                }
            };
            if let Some(line) = errno_line {
                println!("toolstack: {} refused: {line}", kind_name(header.kind));
            }
            let mut frame = vec![0u8; HEADER_LEN + body.len().min(MAX_PAYLOAD)];
            match encode_frame(
                kind,
                header.seq,
                &[&body[..body.len().min(MAX_PAYLOAD)]],
                &mut frame,
            ) {
                Ok(n) => self.tx.extend(&frame[..n]),
                Err(e) => println!("toolstack: cannot encode a reply: {e:?}"),
            }
            self.flush();
        }
    }

    /// Sends what the transmitter takes; returns whether it took anything.
    fn flush(&mut self) -> bool {
        let mut sent_any = false;
        while !self.tx.is_empty() {
            let (front, _) = self.tx.as_slices();
            let chunk = &front[..front.len().min(4096)];
            match ts::mgmt_write(chunk) {
                Ok(0) => break,
                Ok(n) => {
                    self.tx.drain(..n);
                    sent_any = true;
                }
                Err(e) => {
                    println!(
                        "toolstack: mgmt_write: {e}; dropping {} bytes",
                        self.tx.len()
                    );
                    self.tx.clear();
                    break;
                }
            }
        }
        sent_any
    }

    fn handle(&mut self, h: FrameHeader, payload: &[u8], backends: &mut Backends) -> Outcome {
        let bad = || (Errno::EINVAL, String::from("malformed request"));
        if h.kind == KIND_HELLO {
            return reply_of(&HelloReply {
                protocol: u32::from(MGMT_VERSION),
                abi_major: hypercall_abi::ABI_MAJOR as u16,
                abi_minor: hypercall_abi::ABI_MINOR as u16,
                server_domid: self.me,
                pad: 0,
            });
        }
        if h.version != MGMT_VERSION {
            return Err((
                Errno::EINVAL,
                format!(
                    "management protocol {} is not supported (the driver domain speaks {MGMT_VERSION})",
                    h.version
                ),
            ));
        }
        match h.kind {
            KIND_INFO => self.info(),
            KIND_LIST => self.list(),
            KIND_IMAGE_QUERY => {
                let (r, _) = split::<ImageRef>(payload).ok_or_else(bad)?;
                reply_of(&self.images.query(&r))
            }
            KIND_IMAGE_PUT => {
                let (r, data) = split::<ImageRef>(payload).ok_or_else(bad)?;
                match self.images.put(&r, data) {
                    Ok(status) => reply_of(&status),
                    Err(why) => Err((Errno::EINVAL, String::from(why))),
                }
            }
            KIND_CREATE => self.create(payload, backends),
            KIND_DESTROY | KIND_SHUTDOWN | KIND_PAUSE | KIND_UNPAUSE => {
                let r = exact::<DomRef>(payload).ok_or_else(bad)?;
                self.control(h.kind, r.domid)
            }
            KIND_CONSOLE_READ => {
                let r = exact::<ConsoleRead>(payload).ok_or_else(bad)?;
                self.console_read(&r)
            }
            KIND_CONSOLE_WRITE => {
                let (r, bytes) = split::<DomRef>(payload).ok_or_else(bad)?;
                let n = ts::console_input(r.domid, bytes)
                    .map_err(|e| (e, self.domain_error(r.domid, e, "take console input")))?;
                reply_of(&Count { count: n as u64 })
            }
            KIND_DMESG => {
                let r = exact::<ConsoleRead>(payload).ok_or_else(bad)?;
                let mut buf = vec![0u8; (r.max as usize).clamp(1, 4096)];
                let chunk = ts::hv_log_read(r.offset, &mut buf)
                    .map_err(|e| (e, format!("cannot read the hypervisor's log: {e}")))?;
                Ok(console_reply(
                    chunk.start,
                    chunk.end,
                    &buf[..chunk.len as usize],
                    false,
                ))
            }
            KIND_POWEROFF => {
                println!("toolstack: pvctl asked to power the machine off");
                self.poweroff = true;
                Ok(Vec::new())
            }
            KIND_BENCH_REPORT => reply_of(&Count {
                count: self.bench_report(),
            }),
            other => Err((Errno::EINVAL, format!("unknown request kind {other}"))),
        }
    }

    fn info(&self) -> Outcome {
        let p = ts::physinfo().map_err(|e| (e, format!("cannot read the host's info: {e}")))?;
        reply_of(&InfoReply {
            abi_major: p.abi_major,
            abi_minor: p.abi_minor,
            nr_cpus: p.nr_cpus,
            iommu: p.iommu,
            total_pages: p.total_pages,
            free_pages: p.free_pages,
            tsc_hz: p.tsc_hz,
            nr_domains: p.nr_domains,
            pad: 0,
            hv_version: p.hv_version,
        })
    }

    fn list(&self) -> Outcome {
        let mut entries = Vec::new();
        let mut next: DomId = 0;
        let most = (MAX_PAYLOAD - core::mem::size_of::<ListHeader>())
            / core::mem::size_of::<DomainEntry>();
        while entries.len() < most {
            let info = match ts::domain_info(next) {
                Ok(info) => info,
                Err(Errno::ESRCH) => break,
                Err(e) => return Err((e, format!("cannot list the domains: {e}"))),
            };
            entries.push(DomainEntry {
                domid: info.domid,
                state: info.state,
                nr_vcpus: info.nr_vcpus,
                managed: u32::from(self.managed.contains_key(&info.domid)),
                nr_pages: info.nr_pages,
                max_pages: info.max_pages,
                cpu_ns: info.cpu_ns,
                evtchn_ports: info.evtchn_ports_in_use,
                grant_entries: info.grant_entries_in_use,
                console_bytes: info.console_end,
                name: info.name,
            });
            match info.domid.checked_add(1) {
                Some(n) => next = n,
                None => break,
            }
        }
        let head = ListHeader {
            count: entries.len() as u32,
            pad: 0,
            now_ns: now_ns(),
        };
        let mut out = head.as_bytes().to_vec();
        for e in &entries {
            out.extend_from_slice(e.as_bytes());
        }
        Ok(out)
    }

    fn create(&mut self, payload: &[u8], backends: &mut Backends) -> Outcome {
        let start = rdtsc();
        let req = CreateRequest::parse(payload).map_err(|e| {
            (
                Errno::EINVAL,
                match e {
                    PayloadError::TooMany => format!(
                        "too many devices or too long a command line (at most {MAX_DISKS} disks, {MAX_NICS} nics, {MAX_CMDLINE} bytes)"
                    ),
                    _ => String::from("malformed create request"),
                },
            )
        })?;
        let name = String::from(name_str(&req.fixed.name).unwrap_or(""));
        let image = self.images.get(&req.fixed.image).ok_or((
            Errno::ENOENT,
            String::from("the image is not in the driver domain's cache (pvctl uploads it first)"),
        ))?;
        let built = builder::build(backends, &req, image, start)?;
        let hv_ns = cycles_to_ns(built.hv_cycles);
        let ts_cycles = built.total_cycles.saturating_sub(built.hv_cycles);
        let ts_ns = cycles_to_ns(ts_cycles);
        println!(
            "toolstack: created d{} '{name}': {} MiB, {} vCPU(s), {} device record(s); toolstack {} us + hypervisor {} us",
            built.domid,
            req.fixed.max_pages / 256,
            req.fixed.vcpus,
            built.records.len(),
            ts_ns / 1000,
            hv_ns / 1000
        );
        self.managed.insert(
            built.domid,
            Managed {
                name,
                log: ConsoleLog::new(),
                ended: false,
                pending_bench: Some((built.start_tsc, ts_cycles, built.hv_cycles)),
                shutdown_deadline: None,
                ended_order: 0,
            },
        );
        reply_of(&Created {
            domid: built.domid,
            records: built.records.len() as u32,
            toolstack_ns: ts_ns,
            hypervisor_ns: hv_ns,
        })
    }

    /// One line for a failed operation on `domid`.
    fn domain_error(&self, domid: DomId, e: Errno, what: &str) -> String {
        match e {
            Errno::ESRCH => format!("no domain {domid}"),
            Errno::EPERM if domid == self.me || domid == 0 => {
                format!("domain {domid} is the driver domain: it cannot {what} (use poweroff)")
            }
            other => format!("domain {domid} cannot {what}: {other}"),
        }
    }

    fn control(&mut self, kind: u16, domid: DomId) -> Outcome {
        let (result, what) = match kind {
            KIND_DESTROY => {
                self.copy_console(domid);
                (ts::domain_destroy(domid), "be destroyed")
            }
            KIND_SHUTDOWN => (
                ts::domain_shutdown(domid, SHUTDOWN_POWEROFF as u32),
                "be shut down",
            ),
            KIND_PAUSE => (ts::domain_pause(domid), "be paused"),
            _ => (ts::domain_unpause(domid), "be unpaused"),
        };
        let result = if domid == self.me && result.is_ok() {
            Err(Errno::EPERM)
        } else {
            result
        };
        result.map_err(|e| (e, self.domain_error(domid, e, what)))?;
        match kind {
            KIND_DESTROY => {
                let name = self.managed.get(&domid).map(|m| m.name.clone());
                println!(
                    "toolstack: destroyed d{domid}{}",
                    name.map(|n| format!(" '{n}'")).unwrap_or_default()
                );
                self.mark_ended(domid);
            }
            KIND_SHUTDOWN => {
                let deadline = now_ns() + SHUTDOWN_GRACE_NS;
                if let Some(m) = self.managed.get_mut(&domid) {
                    m.shutdown_deadline = Some(deadline);
                }
            }
            _ => {}
        }
        Ok(Vec::new())
    }

    fn console_read(&mut self, r: &ConsoleRead) -> Outcome {
        let max = (r.max as usize).clamp(1, 4096);
        let mut buf = vec![0u8; max];
        match ts::console_read(r.domid, r.offset, &mut buf) {
            Ok(chunk) => Ok(console_reply(
                chunk.start,
                chunk.end,
                &buf[..chunk.len as usize],
                false,
            )),
            Err(Errno::ESRCH) => {
                // Gone: what the log kept is all there is.
                self.copy_console(r.domid);
                let m = self
                    .managed
                    .get(&r.domid)
                    .ok_or((Errno::ESRCH, format!("no domain {}", r.domid)))?;
                let (start, bytes) = m.log.read(r.offset, max);
                Ok(console_reply(start, m.log.end(), &bytes, true))
            }
            Err(e) => Err((e, format!("cannot read domain {}'s console: {e}", r.domid))),
        }
    }

    /// Copies new console output of `domid` into its log; marks it ended
    /// when hv-core no longer knows it.
    fn copy_console(&mut self, domid: DomId) {
        let Some(m) = self.managed.get_mut(&domid) else {
            return;
        };
        if m.ended {
            return;
        }
        let mut buf = [0u8; 1024];
        let mut gone = false;
        for _ in 0..64 {
            match ts::console_read(domid, m.log.next(), &mut buf) {
                Ok(chunk) if chunk.len > 0 => m.log.append(chunk.start, &buf[..chunk.len as usize]),
                Ok(_) => break,
                Err(Errno::ESRCH) => {
                    gone = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if gone {
            self.mark_ended(domid);
        }
    }

    fn mark_ended(&mut self, domid: DomId) {
        self.ended_count += 1;
        let order = self.ended_count;
        if let Some(m) = self.managed.get_mut(&domid) {
            if !m.ended {
                m.ended = true;
                m.ended_order = order;
                m.pending_bench = None;
            }
        }
        // Keep the logs of the last few ended domains only.
        let mut ended: Vec<(u64, DomId)> = self
            .managed
            .iter()
            .filter(|(_, m)| m.ended)
            .map(|(&id, m)| (m.ended_order, id))
            .collect();
        if ended.len() > ENDED_KEPT {
            ended.sort_unstable();
            for (_, id) in &ended[..ended.len() - ENDED_KEPT] {
                self.managed.remove(id);
            }
        }
    }

    /// The console backend: copies every live managed domain's new output
    /// and notes first-output times for the figures.
    fn poll_consoles(&mut self) {
        let live: Vec<DomId> = self
            .managed
            .iter()
            .filter(|(_, m)| !m.ended)
            .map(|(&id, _)| id)
            .collect();
        for domid in live {
            self.copy_console(domid);
            let Some(m) = self.managed.get_mut(&domid) else {
                continue;
            };
            let Some((start, toolstack, hypervisor)) = m.pending_bench else {
                continue;
            };
            if let Ok(info) = ts::domain_info(domid) {
                if info.domid == domid && info.first_output_tsc != 0 {
                    m.pending_bench = None;
                    self.samples.push(CreateSample {
                        toolstack,
                        hypervisor,
                        first_output: info.first_output_tsc.saturating_sub(start),
                    });
                }
            }
        }
    }

    fn enforce_shutdowns(&mut self, now: u64) {
        let late: Vec<DomId> = self
            .managed
            .iter()
            .filter(|(_, m)| !m.ended && m.shutdown_deadline.is_some_and(|d| now >= d))
            .map(|(&id, _)| id)
            .collect();
        for domid in late {
            if let Some(m) = self.managed.get_mut(&domid) {
                m.shutdown_deadline = None;
            }
            match ts::domain_destroy(domid) {
                Ok(()) => {
                    println!("toolstack: d{domid} did not shut down in time: destroyed");
                    self.mark_ended(domid);
                }
                Err(Errno::ESRCH) => self.mark_ended(domid),
                Err(e) => println!("toolstack: destroying d{domid}: {e}"),
            }
        }
    }

    /// Prints the create-time figures as `BENCH` lines; returns how many.
    fn bench_report(&mut self) -> u64 {
        self.poll_consoles();
        let n = self.samples.len();
        if n == 0 {
            println!("toolstack bench: no create has produced output yet");
            return 0;
        }
        let mut lines = 0;
        let figures: [(&str, Pick); 3] = [
            ("create_to_first_output_us", |s| s.first_output),
            ("create_toolstack_us", |s| s.toolstack),
            ("create_hypervisor_us", |s| s.hypervisor),
        ];
        let mut medians = [0u64; 3];
        for (i, (name, pick)) in figures.iter().enumerate() {
            let mut values: Vec<u64> = self.samples.iter().map(|s| cycles_to_ns(pick(s))).collect();
            let Some(stats) = Stats::from_samples(&mut values) else {
                continue;
            };
            medians[i] = stats.median;
            println!(
                "BENCH name={name} value={}.{:03} unit=us min={}.{:03} samples={n}",
                stats.median / 1000,
                stats.median % 1000,
                stats.min / 1000,
                stats.min % 1000
            );
            lines += 1;
        }
        // LightVM creates and boots a unikernel in about 2.3 ms.
        if let Some(ratio) = pv_guest_kit::bench::Hundredths::ratio(medians[0], 2_300_000) {
            println!(
                "BENCH name=create_to_first_output_vs_lightvm value={ratio} unit=ratio reference_us=2300"
            );
            lines += 1;
        }
        lines
    }
}

fn console_reply(start: u64, end: u64, bytes: &[u8], ended: bool) -> Vec<u8> {
    let head = ConsoleData {
        start,
        end,
        len: bytes.len() as u32,
        ended: u32::from(ended),
    };
    let mut out = head.as_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}
