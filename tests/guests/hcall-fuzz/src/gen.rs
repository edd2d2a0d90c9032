//! The call generators: for each hypercall, arguments that are mostly
//! valid-looking (structures in the arena aimed at the fuzzer's own frames,
//! ports and grant references), then mutated (bit flips, boundary values,
//! hypervisor and unmapped pointers), then *constrained*: every value that
//! could hurt the fuzzer itself if the hypervisor accepted it is replaced by
//! one the hypervisor must refuse (see `env` for the rules). The constraint
//! runs last, on the final values, so no mutation can slip past it.

use hypercall_abi::console::{CONSOLE_IO_MAX, CONSOLE_WRITE};
use hypercall_abi::evtchn::*;
use hypercall_abi::grant::*;
use hypercall_abi::hypercall::HYPERCALL_SLOTS;
use hypercall_abi::layout::{
    is_guest_address, GUEST_UPPER_END, GUEST_UPPER_START, LOWER_HALF_END, M2P_VIRT_START,
};
use hypercall_abi::mm::*;
use hypercall_abi::multicall::MulticallEntry;
use hypercall_abi::sched::{
    SchedPoll, SCHEDOP_BLOCK, SCHEDOP_POLL, SCHEDOP_SHUTDOWN, SCHEDOP_YIELD, SHUTDOWN_CRASH,
    SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT,
};
use hypercall_abi::trap::{
    TrapInfo, FRAME_FLAGS_ALL, FRAME_FLAG_SYSCALL, FRAME_FLAG_USER_MODE, TRAP_FLAGS_ALL,
    TRAP_FLAG_USER_INT,
};
use hypercall_abi::{Errno, Hypercall, PAGE_SIZE};
use pv_guest_kit::mm::pagetable::{entry_maddr, va_of};
use pv_guest_kit::traps::KIT_VECTORS;

use crate::env::{Env, Slot, EDGE_SLOT, EDGE_VA, NR_SCRATCH, WINDOW, WINDOW_SLOT};
use crate::rng::Rng;
use crate::sys::{self, IretOutcome, IretTail};

/// Bytes of the arena, where each call's structures are built.
pub const ARENA_SIZE: usize = 64 * 1024;

/// The arena's memory: written by the fuzzer and by the hypervisor (OUT
/// fields), never through a Rust reference.
#[repr(C, align(4096))]
struct ArenaMem(core::cell::UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: one vCPU; only raw-pointer accesses (see `put`, `get`).
unsafe impl Sync for ArenaMem {}

static ARENA: ArenaMem = ArenaMem(core::cell::UnsafeCell::new([0; ARENA_SIZE]));

/// Values worth trying anywhere.
const BOUNDARY: [u64; 34] = [
    0,
    1,
    2,
    3,
    7,
    8,
    15,
    16,
    31,
    32,
    63,
    64,
    255,
    256,
    511,
    512,
    1023,
    1024,
    4095,
    4096,
    4097,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
    u64::MAX - 1,
    0xffff_ffff_ffff_f000,
    0x0000_7fff_ffff_f000,
    0x0000_8000_0000_0000,
];

/// Pointers into the hypervisor's slots (MM-1).
const HV_PTRS: [u64; 9] = [
    0xffff_8000_0000_0000,
    M2P_VIRT_START + 0x1000,
    0xffff_8300_0000_0000,
    0xffff_8300_0010_0000,
    0xffff_87ff_ffff_f000,
    0xffff_ff80_0000_0000,
    0xffff_ffff_8000_0000,
    0xffff_ffff_8010_0000,
    0xffff_ffff_ffff_f000,
];

/// Non-canonical pointers.
const NONCANON: [u64; 4] = [
    0x0000_8000_0000_0000,
    0x8000_0000_0000_0000,
    0x1234_5678_9abc_d000,
    0xffff_7fff_ffff_f000,
];

/// Pointers whose range runs out of guest space or wraps.
const RANGE_EDGES: [u64; 4] = [
    LOWER_HALF_END - 8,
    GUEST_UPPER_END - 8,
    GUEST_UPPER_START - 8,
    u64::MAX - 7,
];

/// Hypervisor, reserved and nonexistent frames.
const BAD_MFNS: [u64; 6] = [0, 0x100, 0x101, 0x1ff, 0xf_ffff_ffff, 0xdead_beef];

/// Entry flags worth trying.
const PTE_FLAGS: [u64; 15] = [
    pte::P | pte::RW | pte::US,
    pte::P | pte::RW | pte::US,
    pte::P | pte::US,
    pte::P | pte::US,
    pte::P | pte::RW,
    pte::P,
    pte::P | pte::RW | pte::US | pte::A | pte::D,
    pte::P | pte::US | pte::NX,
    pte::P | pte::G,
    pte::P | pte::PS_OR_PAT,
    pte::P | pte::PWT | pte::PCD,
    0,
    pte::RW | pte::US,
    pte::P | pte::AVAIL,
    pte::P | (1 << 52),
];

/// What [`Fuzzer::console`] may really print.
const PROBE: &[u8] = b"hcall-fuzz: console_io probe\n";

/// What has to happen after a call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Post {
    /// A trap table may have been replaced: install the kit's again.
    pub reinstall_traps: bool,
    /// An event-channel call may have returned a port at this address.
    pub port_out: Option<u64>,
    /// Where the call reports what its elements did (arena only).
    pub elements: Option<Elements>,
}

/// Where a batch's per-element outcome can be read after the call.
#[derive(Clone, Copy, Debug)]
pub enum Elements {
    /// `mmu_update`/`mmuext_op`: the `done` count (index 0 or 1).
    Done { va: u64, kind: usize },
    /// `multicall` results (`u64` at +8 of each 64-byte entry, index 2) or
    /// grant statuses (`i32` at `offset` of each `stride`-byte op, index 3).
    Results {
        va: u64,
        n: usize,
        stride: u64,
        offset: u64,
        wide: bool,
        kind: usize,
    },
}

impl Post {
    fn merge(&mut self, other: Post) {
        self.reinstall_traps |= other.reinstall_traps;
    }
}

/// One call, ready to issue.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    pub nr: u64,
    pub args: [u64; 5],
    pub post: Post,
}

/// Five arguments, in hex on one line.
#[derive(Clone, Copy, Debug)]
pub struct Args(pub [u64; 5]);

impl core::fmt::Display for Args {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d, e] = self.0;
        write!(f, "[{a:#x}, {b:#x}, {c:#x}, {d:#x}, {e:#x}]")
    }
}

/// What SPEC says a call returns, where its arguments decide it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Anything (SPEC leaves it to the state, or does not say).
    Any,
    /// Exactly this value.
    Value(i64),
    /// This error.
    Errno(Errno),
    /// Some error.
    Error,
    /// 0 or `-EFAULT` (batches that answer per element).
    DoneOrFault,
}

impl Expect {
    /// Whether `ret` is what SPEC says.
    pub fn holds(self, ret: i64) -> bool {
        match self {
            Expect::Any => true,
            Expect::Value(v) => ret == v,
            Expect::Errno(e) => ret == e.to_return(),
            Expect::Error => ret < 0,
            Expect::DoneOrFault => ret == 0 || ret == Errno::EFAULT.to_return(),
        }
    }
}

/// Where an array (or structure) handed to the hypervisor lives.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// In the arena, with room for every element written.
    Arena(u64),
    /// At the end of the edge page: `readable` elements, then unmapped
    /// memory; written through the physmap at `wva`.
    Edge { va: u64, wva: u64, readable: usize },
    /// An address the hypervisor cannot read.
    Bad(u64),
}

impl Place {
    /// The guest address to pass.
    fn va(self) -> u64 {
        match self {
            Place::Arena(va) | Place::Edge { va, .. } | Place::Bad(va) => va,
        }
    }
}

/// Per-hypercall counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub calls: u64,
    pub ok: u64,
}

/// The fuzzer: its world, its randomness, its arena and its findings.
#[derive(Debug)]
pub struct Fuzzer {
    pub env: Env,
    pub rng: Rng,
    arena_next: usize,
    /// Whether the call being built is a *valid-mode* one: values chosen to
    /// succeed, rarely mutated, so that state changes actually happen.
    valid: bool,
    /// Whether this call already built something on the edge page (two
    /// arrays there would overwrite each other).
    edge_used: bool,
    /// Protected and hook entries the call being built writes: `(machine
    /// address, value before, value sent)`, re-read after the call.
    pub watch: alloc::vec::Vec<(u64, u64, u64)>,
    /// What SPEC says each entry of the multicall being built returns.
    pub entry_expect: alloc::vec::Vec<Expect>,
    /// Ports the domain was recently given.
    ports: [u32; 16],
    nports: usize,
    /// Counters per hypercall number (the last: numbers past the page).
    pub counts: [Counts; 65],
    pub iret: Counts,
    /// Elements of batches that succeeded: mmu_update requests, mmuext_op
    /// operations, multicall entries, grant operations.
    pub elements_ok: [u64; 4],
    pub calls: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// SPEC violations and fuzzer anomalies seen (each printed as ERROR).
    pub errors: u64,
    /// Whether raw hypercalls may run with an odd rsp (`oddrsp=0` turns it
    /// off).
    pub odd_rsp_on: bool,
}

/// Writes `value` at `va`.
///
/// # Safety
/// 1. `va .. va + size_of::<T>()` lies in the arena or in a frame the
///    fuzzer owns for crafting (the edge page, a grant frame), which no Rust
///    reference covers.
unsafe fn put<T: Copy>(va: u64, value: T) {
    // SAFETY: obligation 1.
    unsafe { core::ptr::write_unaligned(va as *mut T, value) }
}

/// Reads a `T` at `va` (in the arena).
fn get<T: Copy>(va: u64) -> T {
    let base = ARENA.0.get() as u64;
    assert!(
        va >= base && va + core::mem::size_of::<T>() as u64 <= base + ARENA_SIZE as u64,
        "get({va:#x}) outside the arena"
    );
    // SAFETY: inside the arena (checked), which only raw accesses reach.
    unsafe { core::ptr::read_unaligned(va as *const T) }
}

impl Fuzzer {
    pub fn new(env: Env, rng: Rng) -> Fuzzer {
        Fuzzer {
            env,
            rng,
            arena_next: 0,
            edge_used: false,
            valid: false,
            entry_expect: alloc::vec::Vec::with_capacity(128),
            watch: alloc::vec::Vec::with_capacity(256),
            ports: [0; 16],
            nports: 0,
            counts: [Counts::default(); 65],
            iret: Counts::default(),
            elements_ok: [0; 4],
            calls: 0,
            succeeded: 0,
            failed: 0,
            errors: 0,
            odd_rsp_on: true,
        }
    }

    // ----- randomness helpers -------------------------------------------

    /// A mutation of `v`: bit flips, arithmetic, boundary values, pointers.
    fn mutate(&mut self, v: u64) -> u64 {
        let r = &mut self.rng;
        match r.below(11) {
            0 | 1 => v ^ (1 << r.below(64)),
            2 => v ^ (1 << r.below(64)) ^ (1 << r.below(64)) ^ (1 << r.below(64)),
            3 => v.wrapping_add(r.pick(&[
                1,
                u64::MAX,
                8,
                0u64.wrapping_sub(8),
                4096,
                0u64.wrapping_sub(4096),
            ])),
            4 | 5 => r.pick(&BOUNDARY),
            6 => r.pick(&HV_PTRS),
            7 => r.pick(&NONCANON),
            8 => r.next_u64(),
            9 => r.next_u64() & 0xfff,
            _ => v ^ (r.next_u64() & 0xff),
        }
    }

    /// `v`, mutated one time in `den`.
    fn m(&mut self, v: u64, den: u64) -> u64 {
        let den = if self.valid { den * 16 } else { den };
        if self.rng.chance(1, den) {
            self.mutate(v)
        } else {
            v
        }
    }

    /// An argument nobody reads.
    fn junk(&mut self) -> u64 {
        let v = self.rng.pick(&BOUNDARY);
        self.m(v, 2)
    }

    /// An address the hypervisor can neither read nor write.
    fn bad_ptr(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => self.rng.pick(&HV_PTRS),
            1 => self.rng.pick(&NONCANON),
            2 => {
                let base = self.env.unmapped[self.rng.index(self.env.unmapped.len())];
                base + (self.rng.below(64) * 8)
            }
            _ => self.rng.pick(&RANGE_EDGES),
        }
    }

    /// `size` bytes of arena, 16-byte aligned; `None` when it is used up.
    fn alloc(&mut self, size: usize) -> Option<u64> {
        let start = (self.arena_next + 15) & !15;
        let end = start.checked_add(size)?;
        if end > ARENA_SIZE {
            return None;
        }
        self.arena_next = end;
        Some(ARENA.0.get() as u64 + start as u64)
    }

    /// Starts a new call: the arena is free again.
    pub fn reset_arena(&mut self) {
        self.arena_next = 0;
        self.edge_used = false;
        self.watch.clear();
    }

    /// Notes a write of `value` to the entry at `maddr` under `slot`, if the
    /// entry is one the fuzzer runs on.
    fn watch_entry(&mut self, slot: Slot, maddr: u64, value: u64) {
        if matches!(slot, Slot::Protected | Slot::Hook(_))
            && self.watch.len() < self.watch.capacity()
        {
            let before = self.env.read_entry(maddr).unwrap_or(0);
            self.watch.push((maddr, before, value));
        }
    }

    /// Re-reads the watched entries after call `nr`: a change is a value the
    /// hypervisor should have refused (or a write it made elsewhere).
    pub fn check_watch(&mut self, nr: u64, ret: i64) {
        const AD: u64 = pte::A | pte::D;
        for i in 0..self.watch.len() {
            let (maddr, before, sent) = self.watch[i];
            let now = self.env.read_entry(maddr).unwrap_or(0);
            if (now ^ before) & !AD != 0 {
                self.errors += 1;
                pv_guest_kit::println!(
                    "hcall-fuzz: ERROR: call nr {nr:#x} (returned {ret}) changed protected entry {maddr:#x} ({:?}, {:?}) from {before:#x} to {now:#x}; the value sent was {sent:#x}",
                    self.env.own(maddr >> 12),
                    self.env.slot_of_entry(maddr),
                );
            }
        }
    }

    /// A pointer the hypervisor may write `size` bytes through without
    /// touching anything the fuzzer runs on (or must fail to).
    fn wptr(&mut self, size: usize) -> u64 {
        match self.rng.below(20) {
            0..=10 => match self.alloc(size) {
                Some(va) => va,
                None => self.bad_ptr(),
            },
            11 | 12 => WINDOW + (self.rng.below(2 << 20) & !7),
            13 => WINDOW + (self.rng.below(1 << 30) & !0xf),
            14 => self.env.boot_l4_va + self.rng.below(512) * 8,
            15 => EDGE_VA + PAGE_SIZE - self.rng.below(size as u64 + 1),
            _ => self.bad_ptr(),
        }
    }

    /// Where an array of `n` elements of `elem` bytes goes; the arena keeps
    /// room for `extra` more (a terminator).
    fn place(&mut self, elem: usize, n: usize, extra: usize) -> Place {
        let r = self.rng.below(100);
        if r < 8 && !self.edge_used && n * elem <= PAGE_SIZE as usize {
            self.edge_used = true;
            let off = PAGE_SIZE - (n * elem) as u64;
            Place::Edge {
                va: EDGE_VA + off,
                wva: self.env.edge_wva + off,
                readable: n,
            }
        } else if r < 92 {
            match self.alloc((n + extra) * elem) {
                Some(va) => Place::Arena(va),
                None => Place::Bad(self.bad_ptr()),
            }
        } else {
            Place::Bad(self.bad_ptr())
        }
    }

    /// Writes element `i` of `place`.
    fn put_at<T: Copy>(&self, place: Place, i: usize, value: T) {
        let size = core::mem::size_of::<T>() as u64;
        match place {
            // SAFETY: `place` chose the arena with room for element `i`.
            Place::Arena(va) => unsafe { put(va + i as u64 * size, value) },
            Place::Edge { wva, readable, .. } if i < readable => {
                // SAFETY: the edge page is the fuzzer's crafting frame; the
                // element lies inside it (readable elements end at its end).
                unsafe { put(wva + i as u64 * size, value) }
            }
            _ => {}
        }
    }

    /// A count for an array placed at `place` holding `n` crafted elements:
    /// mostly `n`; past the end only where that is safe (`tail_safe`: the
    /// arena holds a terminator the hypervisor stops at), or into unmapped
    /// memory at the edge; sometimes a refused size.
    fn count_for(&mut self, place: Place, n: usize, max: u64, tail_safe: bool) -> u64 {
        let n = n as u64;
        match (place, self.rng.below(20)) {
            (_, 0) => self.rng.pick(&[max + 1, u64::MAX, 1 << 32, max * 4]),
            (_, 1) => 0,
            (Place::Edge { .. }, 2..=6) => n + 1 + self.rng.below(8),
            (Place::Arena(_), 2) if tail_safe => n + 1 + self.rng.below(100),
            (Place::Bad(_), 2) => self.rng.pick(&BOUNDARY),
            _ => n,
        }
    }

    /// A random small batch size.
    fn batch_len(&mut self, big: usize) -> usize {
        match self.rng.below(40) {
            0 => 0,
            1..=12 => 1,
            13..=30 => 2 + self.rng.index(7),
            31..=38 => 9 + self.rng.index(56),
            _ => 65 + self.rng.index(big.max(1)),
        }
    }

    /// A frame number of any kind: own frames of every class, other
    /// domains', the hypervisor's, nonexistent ones.
    fn mfn_any(&mut self) -> u64 {
        let env = &self.env;
        let r = &mut self.rng;
        let weights: &[u32] = if self.valid {
            &[50, 30, 5, 1, 1, 5, 2, 1, 1, 4]
        } else {
            &[25, 10, 8, 3, 5, 15, 10, 5, 5, 4]
        };
        match r.weighted(weights) {
            0 => env.scratch[r.index(env.scratch.len())],
            1 => env.test[r.index(env.test.len())],
            2 => env.tree[r.index(3)],
            3 => env.boot_l4,
            4 => env.boot_tables[r.index(env.boot_tables.len())],
            5 => env.own_mfn(r),
            6 => env.foreign[r.index(env.foreign.len())],
            7 => r.pick(&BAD_MFNS),
            8 => env.nr_m2p + r.below(4),
            _ => {
                if r.chance(1, 2) {
                    env.edge_mfn
                } else {
                    env.grant[r.index(env.grant.len())]
                }
            }
        }
    }

    /// A leaf-looking entry value.
    fn pte_value(&mut self) -> u64 {
        let mfn = self.mfn_any();
        let flags = if self.valid {
            if self.env.own(mfn) == Some(crate::env::Own::Scratch) {
                self.rng
                    .pick(&[pte::P | pte::RW | pte::US, pte::P | pte::US, 0])
            } else {
                self.rng
                    .pick(&[pte::P | pte::US, pte::P | pte::US | pte::NX, 0])
            }
        } else {
            self.rng.pick(&PTE_FLAGS)
        };
        let v = (mfn << 12) | flags;
        self.m(v, 6)
    }

    /// A table-looking entry value (for L2..L4 entries).
    fn table_value(&mut self) -> u64 {
        let env = &self.env;
        let r = &mut self.rng;
        let mfn = match if self.valid { r.below(4) } else { r.below(8) } {
            0 => env.tree[0],
            1 => env.tree[1],
            2 | 3 => env.test[r.index(env.test.len())],
            4 => env.scratch[r.index(env.scratch.len())],
            5 => env.boot_tables[r.index(env.boot_tables.len())],
            6 => env.foreign[r.index(env.foreign.len())],
            _ => env.own_mfn(r),
        };
        let flags = if self.valid {
            r.pick(&[pte::P | pte::US, pte::P | pte::US, 0])
        } else {
            r.pick(&[
                pte::P | pte::RW | pte::US,
                pte::P | pte::US,
                pte::P | pte::RW,
            ])
        };
        let v = (mfn << 12) | flags;
        self.m(v, 6)
    }

    /// Makes `value` safe under `slot`: a global bit makes any present
    /// entry one the hypervisor must refuse.
    fn constrain_entry(&self, slot: Slot, value: u64) -> u64 {
        if self.env.safe_entry(slot, value) {
            value
        } else {
            value | pte::P | pte::G
        }
    }

    /// A port number worth trying.
    fn port(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=4 if self.nports > 0 => u64::from(self.ports[self.rng.index(self.nports)]),
            0..=6 => 1 + self.rng.below(20),
            7 => self
                .rng
                .pick(&[0, 1023, 1024, 4096, 0xffff_ffff, 1 << 32, u64::MAX]),
            _ => {
                let p = 1 + self.rng.below(40);
                self.mutate(p)
            }
        }
    }

    /// Counts what the elements of a finished batch did.
    pub fn account(&mut self, elements: Elements) {
        match elements {
            Elements::Done { va, kind } => {
                let done: u64 = get(va);
                self.elements_ok[kind] += done.min(4096);
            }
            Elements::Results {
                va,
                n,
                stride,
                offset,
                wide,
                kind,
            } => {
                for i in 0..n as u64 {
                    let at = va + i * stride + offset;
                    let ret = if wide {
                        get::<u64>(at) as i64
                    } else {
                        i64::from(get::<i32>(at))
                    };
                    self.elements_ok[kind] += u64::from(ret >= 0);
                    if wide {
                        let expect = self.entry_expect.get(i as usize).copied();
                        if let Some(expect) = expect.filter(|e| !e.holds(ret)) {
                            let entry: MulticallEntry = get(va + i * stride);
                            self.mismatch(
                                entry.op,
                                entry.args[..5].try_into().unwrap_or([0; 5]),
                                ret,
                                expect,
                                "multicall entry",
                            );
                        }
                    }
                }
            }
        }
    }

    /// Reports a result SPEC does not allow (the first few in full).
    pub fn mismatch(&mut self, nr: u64, args: [u64; 5], ret: i64, expect: Expect, what: &str) {
        self.errors += 1;
        if self.errors <= 20 {
            pv_guest_kit::println!(
                "hcall-fuzz: ERROR: {what} nr {nr:#x} args {} returned {ret} ({:?}), SPEC says {expect:?}",
                Args(args),
                Errno::check(ret).err()
            );
        }
    }

    /// An arena slot for a `done` count (`kind` as in [`Elements::Done`]),
    /// or another pointer (0, or one [`Fuzzer::wptr`] gives).
    fn done_ptr(&mut self, kind: usize, post: &mut Post) -> u64 {
        match self.rng.below(6) {
            0 | 1 => 0,
            2 => self.wptr(8),
            _ => match self.alloc(8) {
                Some(va) => {
                    // SAFETY: the 8 bytes just allocated.
                    unsafe { put(va, 0u64) };
                    post.elements = Some(Elements::Done { va, kind });
                    va
                }
                None => 0,
            },
        }
    }

    /// Remembers a port the hypervisor handed out.
    pub fn learn_port(&mut self, va: u64) {
        let port: u32 = get(va);
        if port != 0 && port < 4096 {
            let slot = if self.nports < self.ports.len() {
                self.nports += 1;
                self.nports - 1
            } else {
                self.rng.index(self.ports.len())
            };
            self.ports[slot] = port;
        }
    }

    /// A domain id worth trying.
    fn domid(&mut self) -> u32 {
        let me = self.env.domid;
        let v = self
            .rng
            .pick(&[0, 1, 2, 3, me, me, me, 0x7ff0, 0xffff, u32::MAX]);
        self.m(u64::from(v), 8) as u32
    }

    // ----- the calls ------------------------------------------------------

    /// What SPEC says call `nr` with `a` returns, where the arguments alone
    /// decide it (`nested`: as a multicall entry).
    pub fn expect(&self, nr: u64, a: [u64; 5], nested: bool) -> Expect {
        use hypercall_abi::start_info::Capabilities;
        let batch_max = if nested { 512 } else { MMU_BATCH_MAX };
        match Hypercall::from_number(nr) {
            None => Expect::Errno(Errno::ENOSYS),
            Some(Hypercall::Version) => match a[0] {
                0 => {
                    let (major, minor) = self.env.abi;
                    Expect::Value(hypercall_abi::hypercall::pack_version(major, minor) as i64)
                }
                1 => Expect::Any,
                _ => Expect::Errno(Errno::EINVAL),
            },
            Some(Hypercall::ConsoleIo) if a[0] <= 1 && a[1] > CONSOLE_IO_MAX => {
                Expect::Errno(Errno::E2BIG)
            }
            Some(Hypercall::SchedOp) => match a[0] {
                SCHEDOP_YIELD => Expect::Value(0),
                // The generator only leaves reasons SPEC refuses.
                SCHEDOP_SHUTDOWN => Expect::Errno(Errno::EINVAL),
                _ => Expect::Any,
            },
            Some(Hypercall::SetTrapTable) if a[1] > 32 => Expect::Errno(Errno::E2BIG),
            Some(Hypercall::StackSwitch) => {
                if a[0] == 0 || !is_guest_address(a[0] - 1) {
                    Expect::Errno(Errno::EINVAL)
                } else {
                    Expect::Value(0)
                }
            }
            Some(Hypercall::SetCallbacks) => {
                if a[..3].iter().all(|&x| x == 0 || is_guest_address(x)) {
                    Expect::Value(0)
                } else {
                    Expect::Errno(Errno::EINVAL)
                }
            }
            Some(Hypercall::Iret | Hypercall::Multicall) if nested => Expect::Errno(Errno::EINVAL),
            // Only issued with an unreadable frame (HC-16).
            Some(Hypercall::Iret) => Expect::Errno(Errno::EFAULT),
            // The capability is checked before anything else (HC-17, TS-*).
            Some(Hypercall::Domctl) => {
                let needs = match a[0] {
                    0 | 8 | 9 => Some(Capabilities::DOMAIN_QUERY),
                    1..=15 => Some(Capabilities::DOMAIN_BUILD),
                    _ => None,
                };
                match needs {
                    Some(c) if self.env.capabilities & c.bits() == 0 => Expect::Errno(Errno::EPERM),
                    Some(_) => Expect::Any,
                    None => Expect::Errno(Errno::EINVAL),
                }
            }
            // Only sub-command 0 exists; the generator never uses it.
            Some(Hypercall::BenchOp) => Expect::Error,
            Some(Hypercall::MmuUpdate | Hypercall::MmuextOp) if a[1] > batch_max => {
                Expect::Errno(Errno::E2BIG)
            }
            Some(Hypercall::UpdateVaMapping) if !is_guest_address(a[0]) => Expect::Error,
            Some(Hypercall::Multicall) if a[1] > hypercall_abi::multicall::MULTICALL_MAX => {
                Expect::Errno(Errno::E2BIG)
            }
            Some(Hypercall::Multicall) => Expect::DoneOrFault,
            Some(Hypercall::GrantTableOp)
                if matches!(
                    a[0],
                    GNTTABOP_MAP_GRANT_REF | GNTTABOP_UNMAP_GRANT_REF | GNTTABOP_COPY
                ) =>
            {
                if a[2] > GNTTAB_BATCH_MAX {
                    Expect::Errno(Errno::E2BIG)
                } else {
                    Expect::DoneOrFault
                }
            }
            Some(Hypercall::SetTimerOp) => Expect::Value(0),
            // The fuzzer is one vCPU without devices or devbus rights: a
            // number past u32 or an unknown command is refused, and it can
            // only ask whether vCPU 0 (itself) is up.
            Some(Hypercall::VcpuOp) if a[1] > u64::from(u32::MAX) || a[0] > 4 => {
                Expect::Errno(Errno::EINVAL)
            }
            Some(Hypercall::VcpuOp) if a[0] == 3 && a[1] == 0 => Expect::Value(1),
            Some(Hypercall::PhysdevOp) => Expect::Errno(Errno::EPERM),
            _ => Expect::Any,
        }
    }

    /// A hypercall number for a top-level call (iret has its own path).
    pub fn pick_nr(&mut self) -> u64 {
        // 0 ..= 18 by name (iret never), then numbers without a hypercall.
        const WEIGHTS: [u32; 20] = [
            3, 4, 5, 4, 3, 3, 0, 3, 2, 14, 10, 14, 8, 12, 12, 3, 3, 2, 2, 4,
        ];
        match self.rng.weighted(&WEIGHTS) {
            19 => {
                let first = first_undefined_nr();
                first + self.rng.below(HYPERCALL_SLOTS.saturating_sub(first).max(1))
            }
            nr => nr as u64,
        }
    }

    /// Builds call `nr` (`nested`: as a multicall entry).
    pub fn gen(&mut self, nr: u64, nested: bool) -> Call {
        self.valid = self.rng.chance(1, 2);
        let mut post = Post::default();
        let args = match Hypercall::from_number(nr) {
            Some(Hypercall::Version) => {
                let cmd = self.rng.below(2);
                [
                    self.m(cmd, 4),
                    self.junk(),
                    self.junk(),
                    self.junk(),
                    self.junk(),
                ]
            }
            Some(Hypercall::ConsoleIo) => self.console(),
            Some(Hypercall::SchedOp) => self.sched(),
            Some(Hypercall::SetTrapTable) => {
                post.reinstall_traps = true;
                self.trap_table()
            }
            Some(Hypercall::StackSwitch) => {
                let rsp = self.rng.pick(&[
                    WINDOW + PAGE_SIZE,
                    self.env.virt_base + 0x10_0000,
                    0,
                    1,
                    LOWER_HALF_END,
                    GUEST_UPPER_START,
                    GUEST_UPPER_END,
                    0xffff_8000_0000_0001,
                ]);
                [
                    self.m(rsp, 3),
                    self.junk(),
                    self.junk(),
                    self.junk(),
                    self.junk(),
                ]
            }
            Some(Hypercall::SetCallbacks) => self.callbacks(),
            Some(Hypercall::Domctl) => {
                let op = self.rng.pick(&[0, 0, 0, 1]);
                let domid = u64::from(self.domid());
                [
                    self.m(op, 6),
                    domid,
                    self.wptr(64),
                    self.junk(),
                    self.junk(),
                ]
            }
            Some(Hypercall::BenchOp) => {
                let cmd = self.rng.pick(&[1, 2, u64::MAX]);
                let cmd = match self.m(cmd, 3) {
                    0 => 1,
                    c => c,
                };
                [cmd, self.junk(), self.junk(), self.junk(), self.junk()]
            }
            Some(Hypercall::MmuUpdate) => self.mmu_update(nested, &mut post),
            Some(Hypercall::UpdateVaMapping) => self.update_va_mapping(),
            Some(Hypercall::MmuextOp) => self.mmuext_op(nested, &mut post),
            Some(Hypercall::Multicall) if !nested => {
                let (args, batch) = self.multicall();
                post.merge(batch);
                post.elements = batch.elements;
                args
            }
            Some(Hypercall::EvtchnOp) => {
                let (args, out) = self.evtchn();
                post.port_out = out;
                args
            }
            Some(Hypercall::GrantTableOp) => self.grant(&mut post),
            Some(Hypercall::SetTimerOp) => {
                // Any deadline is harmless: VIRQ_TIMER, if bound, only sets
                // a pending bit (no event callback).
                let deadline = self.rng.pick(&[0, 1, 1_000_000, 5_000_000_000, u64::MAX]);
                [
                    self.m(deadline, 3),
                    self.junk(),
                    self.junk(),
                    self.junk(),
                    self.junk(),
                ]
            }
            // Secondary vCPUs, devices and device records: hostile numbers
            // and pointers only (an argument pointer is never our memory,
            // so nothing of ours is written).
            Some(Hypercall::VcpuOp) => {
                let (cmd, vcpu) = (self.rng.below(6), self.rng.pick(&[0, 1, 2, 31, 32]));
                [
                    self.m(cmd, 2),
                    self.m(vcpu, 3),
                    self.bad_ptr(),
                    self.junk(),
                    self.junk(),
                ]
            }
            Some(Hypercall::PhysdevOp | Hypercall::DevbusOp) => {
                let cmd = self.rng.below(8);
                [
                    self.m(cmd, 2),
                    self.bad_ptr(),
                    self.junk(),
                    self.junk(),
                    self.junk(),
                ]
            }
            // iret and multicall inside a multicall are refused without
            // running; numbers without a hypercall are refused.
            Some(Hypercall::Iret | Hypercall::Multicall) | None => [
                self.junk(),
                self.junk(),
                self.junk(),
                self.junk(),
                self.junk(),
            ],
            // A hypercall newer than this fuzzer: arguments that every
            // hypercall so far refuses.
            #[allow(unreachable_patterns)]
            Some(_) => self.refused_args(),
        };
        Call { nr, args, post }
    }

    /// `console_io`: mostly refused or empty writes; the real output is one
    /// fixed line, rarely.
    fn console(&mut self) -> [u64; 5] {
        let cmd = self
            .rng
            .pick(&[CONSOLE_WRITE, CONSOLE_WRITE, CONSOLE_WRITE, 1, 2]);
        let cmd = self.m(cmd, 8);
        // `keep`: the length stays (the write must fail, or is the probe).
        let (len, buf, keep) = match self.rng.below(8) {
            0..=2 => (0, self.wptr(256), false),
            3 => {
                let len = self.rng.pick(&[CONSOLE_IO_MAX + 1, u64::MAX, 1 << 32]);
                (len, self.wptr(256), true)
            }
            4 => (1 + self.rng.below(300), self.bad_ptr(), true),
            5 => {
                let k = 1 + self.rng.below(255);
                let len = k + 1 + self.rng.below(300);
                (len, EDGE_VA + PAGE_SIZE - k, true)
            }
            6 if self.rng.chance(1, 64) => (PROBE.len() as u64, PROBE.as_ptr() as u64, true),
            _ => (self.rng.below(300), self.wptr(256), false),
        };
        // A write that could succeed with other bytes than the probe line
        // would print garbage: make it empty.
        let len = if cmd == CONSOLE_WRITE && len <= CONSOLE_IO_MAX && !keep {
            0
        } else {
            len
        };
        [cmd, len, buf, self.junk(), self.junk()]
    }

    /// `sched_op`: yield, and block/poll/shutdown only in forms that must
    /// be refused.
    fn sched(&mut self) -> [u64; 5] {
        let (mut cmd, mut arg) = match self.rng.below(10) {
            0..=4 => (SCHEDOP_YIELD, self.junk()),
            5 | 6 => {
                let reason = self
                    .rng
                    .pick(&[2, 4, 5, 0xff, u64::MAX, 1 << 32, (1 << 32) | 3]);
                (SCHEDOP_SHUTDOWN, self.m(reason, 4))
            }
            7 | 8 => (SCHEDOP_POLL, self.poll()),
            _ => {
                let cmd = 4 + self.rng.below(10);
                (self.m(cmd, 2), self.junk())
            }
        };
        match cmd {
            SCHEDOP_BLOCK => cmd = SCHEDOP_YIELD,
            SCHEDOP_SHUTDOWN
                if matches!(arg, SHUTDOWN_POWEROFF | SHUTDOWN_REBOOT | SHUTDOWN_CRASH) =>
            {
                arg = 2;
            }
            SCHEDOP_POLL if !self.poll_returns(arg) => arg = self.bad_ptr(),
            _ => {}
        }
        [cmd, arg, self.junk(), self.junk(), self.junk()]
    }

    /// A `SchedPoll` that never blocks: refused (bad pad, no ports, too
    /// many, unreadable ports), or with a timeout long past (ABI 0.4: returns
    /// at once; ABI 0.3 refused any timeout).
    fn poll(&mut self) -> u64 {
        let Some(va) = self.alloc(24 + 64) else {
            return self.bad_ptr();
        };
        let ports = va + 24;
        for i in 0..16u64 {
            let p = self.port() as u32;
            // SAFETY: inside the 88 bytes just allocated.
            unsafe { put(ports + i * 4, p) };
        }
        let mut poll = SchedPoll {
            ports,
            nr_ports: 1 + self.rng.below(8) as u32,
            pad: 0,
            timeout: 1 + self.rng.below(1000),
        };
        match self.rng.below(6) {
            0 => poll.pad = self.mutate(0) as u32 | 1,
            1 => poll.nr_ports = 0,
            2 => poll.nr_ports = 9 + self.rng.below(100) as u32,
            3 => poll.ports = self.bad_ptr(),
            _ => {}
        }
        // SAFETY: inside the allocation.
        unsafe { put(va, poll) };
        va
    }

    /// Whether `sched_op(POLL, arg)` returns at once: `arg` is unreadable,
    /// or a crafted structure in the arena that breaks a rule or whose
    /// timeout (a system time in ns) passed during boot.
    fn poll_returns(&self, arg: u64) -> bool {
        let base = ARENA.0.get() as u64;
        let unmapped = |va: u64| self.env.unmapped.contains(&(va & !0xfff));
        if !(base..base + ARENA_SIZE as u64 - 24).contains(&arg) {
            return !is_guest_address(arg) || unmapped(arg);
        }
        let poll: SchedPoll = get(arg);
        poll.pad != 0
            || poll.nr_ports == 0
            || poll.nr_ports > 8
            || !is_guest_address(poll.ports)
            || unmapped(poll.ports)
            || (1..=1000).contains(&poll.timeout)
    }

    /// `set_trap_table`: the kit's entries, shuffled, cut and mutated; a
    /// table the hypervisor may accept only ever names the kit's stubs.
    fn trap_table(&mut self) -> [u64; 5] {
        let n = if self.rng.chance(1, 10) {
            0
        } else {
            1 + self.rng.index(KIT_VECTORS.len())
        };
        let place = self.place(16, n, 0);
        let mut vectors = KIT_VECTORS;
        for i in (1..vectors.len()).rev() {
            vectors.swap(i, self.rng.index(i + 1));
        }
        let mut entries = [TrapInfo::default(); 32];
        for (i, entry) in entries.iter_mut().enumerate().take(n) {
            let v = vectors[i % vectors.len()];
            let mut e = TrapInfo {
                vector: v,
                flags: if matches!(v, 3 | 4) {
                    TRAP_FLAG_USER_INT
                } else {
                    0
                },
                reserved: [0; 6],
                address: self.env.kit_traps[usize::from(v)],
            };
            match self.rng.below(24) {
                0 => e.vector = self.rng.pick(&[2, 8, 18, 32, 63, 255, vectors[0]]),
                1 => e.flags = self.rng.pick(&[2, 0x80, 0xff]),
                2 => e.reserved[self.rng.index(6)] = 1 + self.rng.below(255) as u8,
                3 => e.address = self.mutate(e.address),
                4 => e.address = 0,
                _ => {}
            }
            *entry = e;
        }
        // A table of entries that are each valid may be installed: then
        // every address is 0 or the kit's stub for its vector.
        let valid = |e: &TrapInfo| {
            e.vector < 32
                && !matches!(e.vector, 2 | 8 | 18)
                && e.flags & !TRAP_FLAGS_ALL == 0
                && e.reserved == [0; 6]
                && (e.address == 0 || is_guest_address(e.address))
        };
        if entries[..n].iter().all(valid) {
            for e in &mut entries[..n] {
                if e.address != 0 {
                    e.address = self.env.kit_traps[usize::from(e.vector)];
                }
            }
        }
        for (i, e) in entries[..n].iter().enumerate() {
            self.put_at(place, i, *e);
        }
        let count = match place {
            Place::Edge { .. } => n as u64 + 1 + self.rng.below(4),
            _ if self.rng.chance(1, 12) => self.rng.pick(&[33, 64, u64::MAX, 1 << 32]),
            _ => n as u64,
        };
        [place.va(), count, self.junk(), self.junk(), self.junk()]
    }

    /// `set_callbacks`: the event callback is never left pointing anywhere
    /// but 0 (the failsafe and syscall callbacks are unused in kernel mode).
    fn callbacks(&mut self) -> [u64; 5] {
        let mut cb = [0u64; 3];
        for c in &mut cb {
            let v = self.rng.pick(&[
                0,
                0,
                0xffff_8000_0000_0000,
                0x8000_0000_0000_0000,
                0x40_0000,
                WINDOW,
                1,
            ]);
            *c = self.m(v, 4);
        }
        let ok = |a: u64| a == 0 || is_guest_address(a);
        if cb.iter().all(|&a| ok(a)) && cb[0] != 0 {
            if self.rng.chance(1, 2) {
                cb[0] = 0;
            } else {
                cb[1] = self.rng.pick(&HV_PTRS);
            }
        }
        [cb[0], cb[1], cb[2], self.junk(), self.junk()]
    }

    /// One `mmu_update` request aimed at the fuzzer's own tables.
    fn request(&mut self) -> MmuUpdate {
        let weights: &[u32] = if self.valid {
            &[60, 10, 10, 3, 1, 1, 0, 10, 1, 0, 0]
        } else {
            &[40, 8, 8, 3, 6, 5, 2, 8, 5, 5, 5]
        };
        let (ptr, val) = match self.rng.weighted(weights) {
            0 => {
                let i = if self.rng.chance(3, 4) {
                    self.rng.index(2 * NR_SCRATCH)
                } else {
                    self.rng.index(512)
                };
                (entry_maddr(self.env.tree[0], i), self.pte_value())
            }
            1 => {
                let t = self.env.tree[1 + self.rng.index(2)];
                let i = 1 + self.rng.index(511);
                (entry_maddr(t, i), self.table_value())
            }
            2 => {
                let t = self.env.test[self.rng.index(self.env.test.len())];
                let i = self.rng.index(512);
                let v = if self.rng.chance(1, 2) {
                    self.pte_value()
                } else {
                    self.table_value()
                };
                (entry_maddr(t, i), v)
            }
            3 => {
                let ptr = match self.rng.below(3) {
                    0 => entry_maddr(self.env.tree[1], 0),
                    1 => entry_maddr(self.env.tree[2], 0),
                    _ => entry_maddr(self.env.boot_l4, WINDOW_SLOT),
                };
                let v = if self.rng.chance(1, 2) {
                    self.env.read_entry(ptr).unwrap_or(0)
                } else {
                    self.table_value()
                };
                (ptr, v)
            }
            4 => {
                let slot = self.rng.index(512);
                let v = match self.rng.below(3) {
                    0 => self
                        .env
                        .read_entry(entry_maddr(self.env.boot_l4, self.rng.index(512)))
                        .unwrap_or(0),
                    1 => self.table_value(),
                    _ => self.pte_value(),
                };
                (entry_maddr(self.env.boot_l4, slot), v)
            }
            5 | 6 => {
                let t = self.env.boot_tables[self.rng.index(self.env.boot_tables.len())];
                let ptr = entry_maddr(t, self.rng.index(512));
                let current = self.env.read_entry(ptr).unwrap_or(0);
                let v = match self.rng.below(3) {
                    0 => current ^ pte::RW,
                    1 => 0,
                    _ => self.pte_value(),
                };
                (ptr, v)
            }
            7 => {
                let mfn = self.mfn_any();
                let pfn = self.rng.below(self.env.nr_pages + 2);
                ((mfn << 12) | MMU_MACHPHYS_UPDATE, self.m(pfn, 4))
            }
            8 => {
                let mfn = match self.rng.below(4) {
                    0 => self.env.scratch[self.rng.index(self.env.scratch.len())],
                    1 => self.env.own_mfn(&mut self.rng),
                    2 => self.env.edge_mfn,
                    _ => self.mfn_any(),
                };
                (entry_maddr(mfn, self.rng.index(512)), self.pte_value())
            }
            9 => {
                let ptr = entry_maddr(self.env.tree[0], self.rng.index(512));
                (ptr | self.rng.pick(&[2, 3, 4]), self.pte_value())
            }
            _ => (self.rng.next_u64(), self.rng.next_u64()),
        };
        let ptr = self.m(ptr, 10);
        let val = self.m(val, 8);
        let slot = self.env.slot_of_request(ptr);
        let val = self.constrain_entry(slot, val);
        self.watch_entry(slot, ptr & !7, val);
        MmuUpdate { ptr, val }
    }

    /// `mmu_update(reqs, count, done, progress)`.
    fn mmu_update(&mut self, nested: bool, post: &mut Post) -> [u64; 5] {
        let n = self.batch_len(136);
        let place = self.place(16, n, 1);
        for i in 0..n {
            let req = self.request();
            self.put_at(place, i, req);
        }
        // Refused (unknown command): stops the batch.
        self.put_at(place, n, MmuUpdate { ptr: 3, val: 0 });
        let max = if nested { 512 } else { MMU_BATCH_MAX };
        let count = self.count_for(place, n, max, true);
        let done = self.done_ptr(0, post);
        let progress = if self.rng.chance(1, 10) {
            // The done count then starts from it: not worth accounting.
            post.elements = None;
            self.mutate(0)
        } else {
            0
        };
        [place.va(), count, done, progress, self.junk()]
    }

    /// A virtual address for `update_va_mapping` and `INVLPG`.
    fn va(&mut self) -> u64 {
        let env = &self.env;
        let va = match self.rng.weighted(&[40, 10, 10, 5, 8, 7, 5, 5]) {
            0 => WINDOW + self.rng.below(512) * PAGE_SIZE,
            1 => va_of(
                WINDOW_SLOT,
                self.rng.index(4),
                self.rng.index(4),
                self.rng.index(512),
            ),
            2 => env.pfn_va(self.rng.below(env.nr_pages + 2)),
            3 => EDGE_VA + self.rng.below(2) * PAGE_SIZE,
            4 => env.unmapped[self.rng.index(env.unmapped.len())],
            5 => self.bad_ptr(),
            6 => WINDOW + self.rng.below(2 << 20),
            _ => self.rng.next_u64(),
        };
        self.m(va, 10)
    }

    /// `update_va_mapping(va, val, flags)`.
    fn update_va_mapping(&mut self) -> [u64; 5] {
        let va = self.va();
        let val = self.pte_value();
        let flags = self.rng.pick(&[
            UVMF_NONE,
            UVMF_TLB_FLUSH,
            UVMF_INVLPG,
            UVMF_INVLPG,
            UVMF_INVLPG | UVMF_ALL,
            UVMF_TLB_FLUSH | UVMF_ALL,
            3,
            8,
        ]);
        let flags = self.m(flags, 10);
        let refused_flags = flags & !(UVMF_FLUSHTYPE_MASK | UVMF_ALL) != 0
            || flags & UVMF_FLUSHTYPE_MASK == UVMF_FLUSHTYPE_MASK;
        let slot = if refused_flags {
            Slot::Free
        } else {
            self.env.slot_of_va(va)
        };
        [
            va,
            self.constrain_entry(slot, val),
            flags,
            self.junk(),
            self.junk(),
        ]
    }

    /// One `mmuext_op` operation.
    fn ext_op(&mut self) -> MmuextOp {
        const CMDS: [u32; 16] = [
            MMUEXT_PIN_L1_TABLE,
            MMUEXT_PIN_L2_TABLE,
            MMUEXT_PIN_L3_TABLE,
            MMUEXT_PIN_L4_TABLE,
            MMUEXT_UNPIN_TABLE,
            MMUEXT_NEW_BASEPTR,
            MMUEXT_TLB_FLUSH_LOCAL,
            MMUEXT_INVLPG_LOCAL,
            MMUEXT_TLB_FLUSH_MULTI,
            MMUEXT_INVLPG_MULTI,
            MMUEXT_TLB_FLUSH_ALL,
            MMUEXT_INVLPG_ALL,
            MMUEXT_NEW_USER_BASEPTR,
            MMUEXT_CLEAR_PAGE,
            MMUEXT_COPY_PAGE,
            12,
        ];
        let weights: &[u32] = if self.valid {
            &[12, 6, 6, 6, 20, 3, 4, 4, 1, 1, 1, 1, 6, 4, 4, 0]
        } else {
            &[8, 5, 5, 6, 10, 5, 6, 6, 2, 2, 2, 2, 5, 6, 6, 4]
        };
        let i = self.rng.weighted(weights);
        let cmd = if i == 15 {
            self.rng.pick(&[12, 13, 14, 18, 0xffff_ffff])
        } else {
            CMDS[i]
        };
        let cmd = self.m(u64::from(cmd), 12) as u32;
        let arg1 = match cmd {
            MMUEXT_PIN_L1_TABLE..=MMUEXT_UNPIN_TABLE if self.valid && self.rng.chance(3, 4) => {
                self.env.test[self.rng.index(self.env.test.len())]
            }
            MMUEXT_PIN_L1_TABLE..=MMUEXT_UNPIN_TABLE => self.mfn_any(),
            MMUEXT_NEW_BASEPTR if self.rng.chance(1, 2) => self.env.boot_l4,
            MMUEXT_NEW_USER_BASEPTR if self.rng.chance(1, 3) => 0,
            MMUEXT_NEW_BASEPTR | MMUEXT_NEW_USER_BASEPTR => self.mfn_any(),
            MMUEXT_INVLPG_LOCAL | MMUEXT_INVLPG_MULTI | MMUEXT_INVLPG_ALL => self.va(),
            MMUEXT_CLEAR_PAGE | MMUEXT_COPY_PAGE if self.rng.chance(1, 2) => {
                self.env.scratch[self.rng.index(self.env.scratch.len())]
            }
            MMUEXT_CLEAR_PAGE | MMUEXT_COPY_PAGE => self.mfn_any(),
            _ => 0,
        };
        let arg2 = if cmd == MMUEXT_COPY_PAGE {
            self.mfn_any()
        } else {
            0
        };
        let mut op = MmuextOp {
            cmd,
            pad: self.m(0, 40) as u32,
            arg1: self.m(arg1, 10),
            arg2: self.m(arg2, 20),
        };
        self.constrain_ext(&mut op);
        op
    }

    /// Replaces the frame of an operation that could hurt the fuzzer if the
    /// hypervisor ran it (one with a bad pad or stray arg2 never runs).
    fn constrain_ext(&mut self, op: &mut MmuextOp) {
        if op.pad != 0 || (op.cmd != MMUEXT_COPY_PAGE && op.arg2 != 0) {
            return;
        }
        let env = &self.env;
        let safe = match op.cmd {
            MMUEXT_PIN_L4_TABLE => env.l4_typing_safe(op.arg1),
            MMUEXT_NEW_BASEPTR => env.new_baseptr_safe(op.arg1),
            MMUEXT_NEW_USER_BASEPTR => op.arg1 == 0 || env.l4_typing_safe(op.arg1),
            MMUEXT_CLEAR_PAGE | MMUEXT_COPY_PAGE => env.whole_write_safe(op.arg1),
            _ => true,
        };
        if !safe {
            op.arg1 = match op.cmd {
                MMUEXT_NEW_BASEPTR => env.boot_l4,
                MMUEXT_CLEAR_PAGE | MMUEXT_COPY_PAGE => {
                    env.scratch[self.rng.index(env.scratch.len())]
                }
                _ => env.test[self.rng.index(env.test.len())],
            };
        }
    }

    /// `mmuext_op(ops, count, done, progress)`.
    fn mmuext_op(&mut self, nested: bool, post: &mut Post) -> [u64; 5] {
        let n = self.batch_len(100);
        let place = self.place(24, n, 1);
        for i in 0..n {
            let op = self.ext_op();
            self.put_at(place, i, op);
        }
        // Refused (unknown command): stops the batch.
        let stop = MmuextOp {
            cmd: 0xdead,
            pad: 0,
            arg1: 0,
            arg2: 0,
        };
        self.put_at(place, n, stop);
        let max = if nested { 512 } else { MMU_BATCH_MAX };
        let count = self.count_for(place, n, max, true);
        let done = self.done_ptr(1, post);
        let progress = if self.rng.chance(1, 10) {
            // The done count then starts from it: not worth accounting.
            post.elements = None;
            self.mutate(0)
        } else {
            0
        };
        [place.va(), count, done, progress, self.junk()]
    }

    /// Arguments that every hypercall must refuse (for numbers the
    /// hypervisor might mistake for another: a truncating decoder).
    fn refused_args(&mut self) -> [u64; 5] {
        [0; 5].map(|_: u64| self.rng.pick(&HV_PTRS))
    }

    /// A number no hypercall has, for a raw `syscall` or a multicall entry;
    /// its low bits never name `iret`.
    pub fn unknown_nr(&mut self) -> u64 {
        let first = first_undefined_nr();
        let nr = match self.rng.below(4) {
            0 => first + self.rng.below(HYPERCALL_SLOTS.saturating_sub(first).max(1)),
            1 => self.rng.pick(&[
                64,
                65,
                255,
                256,
                0xffff,
                0x7fff_ffff,
                0x8000_0000,
                0xffff_ffff,
                1 << 32,
                (1 << 32) | 9,
                (1 << 32) | 12,
                (1 << 32) | 13,
                u64::MAX,
                0x8000_0000_0000_0000,
            ]),
            _ => 64 + (self.rng.next_u64() >> self.rng.below(64)),
        };
        let nr = nr.max(first);
        if nr & 0xff == 6 || nr as u32 == 6 || nr as u16 == 6 {
            nr ^ 0x10
        } else {
            nr
        }
    }

    /// A stack pointer for a raw hypercall: never the real stack; for
    /// `iret`, unreadable (the frame would be read there).
    pub fn odd_rsp(&mut self, iret: bool) -> u64 {
        match self.rng.below(if iret { 2 } else { 5 }) {
            0 => self.bad_ptr(),
            1 => EDGE_VA + PAGE_SIZE - 8 * self.rng.below(9),
            2 => WINDOW + (self.rng.below(2 << 20) & !0xf),
            3 => self.env.boot_l4_va + 0x800,
            _ => self.rng.pick(&[0, 8, 0x40_0000, u64::MAX]),
        }
    }

    /// A call with a number no hypercall has.
    pub fn gen_unknown(&mut self) -> Call {
        let nr = self.unknown_nr();
        Call {
            nr,
            args: self.refused_args(),
            post: Post::default(),
        }
    }

    /// `multicall(calls, count)`: entries built by the same generators.
    fn multicall(&mut self) -> ([u64; 5], Post) {
        let n = match self.rng.below(50) {
            0 => 0,
            1..=30 => 1 + self.rng.index(4),
            31..=46 => 5 + self.rng.index(12),
            _ => 17 + self.rng.index(84),
        };
        let place = self.place(64, n, 0);
        let mut post = Post::default();
        let mut expect = core::mem::take(&mut self.entry_expect);
        expect.clear();
        for i in 0..n {
            let call = match self.rng.below(20) {
                0 => Call {
                    nr: self.rng.pick(&[6, 12]),
                    args: [0; 5].map(|_: u64| self.junk()),
                    post: Post::default(),
                },
                1 => self.gen_unknown(),
                _ => {
                    let nr = self.pick_nr();
                    self.gen(nr, true)
                }
            };
            post.merge(call.post);
            expect.push(self.expect(call.nr, call.args, true));
            let entry = MulticallEntry {
                op: call.nr,
                result: self.junk(),
                args: [
                    call.args[0],
                    call.args[1],
                    call.args[2],
                    call.args[3],
                    call.args[4],
                    self.junk(),
                ],
            };
            self.put_at(place, i, entry);
        }
        // Past the crafted entries only into unmapped memory: multicall does
        // not stop at a failing entry.
        let count = match (place, self.rng.below(20)) {
            (_, 0) => self.rng.pick(&[1025, u64::MAX, 1 << 32]),
            (Place::Edge { .. }, 1..=6) => n as u64 + 1 + self.rng.below(4),
            _ => n as u64,
        };
        self.entry_expect = expect;
        if let (Place::Arena(va), true) = (place, count == n as u64) {
            post.elements = Some(Elements::Results {
                va,
                n,
                stride: 64,
                offset: 8,
                wide: true,
                kind: 2,
            });
        }
        (
            [place.va(), count, self.junk(), self.junk(), self.junk()],
            post,
        )
    }

    /// `evtchn_op(cmd, arg)`; the second value is where a new port is
    /// returned, if anywhere.
    fn evtchn(&mut self) -> ([u64; 5], Option<u64>) {
        const CMDS: [u64; 10] = [
            EVTCHNOP_BIND_INTERDOMAIN,
            EVTCHNOP_BIND_VIRQ,
            EVTCHNOP_CLOSE,
            EVTCHNOP_SEND,
            EVTCHNOP_STATUS,
            EVTCHNOP_ALLOC_UNBOUND,
            EVTCHNOP_BIND_IPI,
            EVTCHNOP_BIND_VCPU,
            EVTCHNOP_UNMASK,
            2,
        ];
        let i = self.rng.weighted(&[10, 8, 12, 14, 10, 14, 8, 6, 8, 4]);
        let cmd = self.m(CMDS[i], 16);
        let mut out = None;
        let arg = match cmd {
            EVTCHNOP_SEND | EVTCHNOP_CLOSE | EVTCHNOP_UNMASK => self.port(),
            EVTCHNOP_BIND_INTERDOMAIN
            | EVTCHNOP_BIND_VIRQ
            | EVTCHNOP_STATUS
            | EVTCHNOP_ALLOC_UNBOUND
            | EVTCHNOP_BIND_IPI
            | EVTCHNOP_BIND_VCPU => {
                let fields = [
                    self.port() as u32,
                    self.domid(),
                    self.rng.pick(&[0, 0, 1, 2, 3, 7, 8, 0xffff_ffff]),
                    self.m(0, 10) as u32,
                    self.rng.next_u64() as u32,
                    self.rng.next_u64() as u32,
                ];
                let words: [u32; 6] = match cmd {
                    EVTCHNOP_ALLOC_UNBOUND => [fields[1], fields[4], 0, 0, 0, 0],
                    EVTCHNOP_BIND_INTERDOMAIN => [fields[1], fields[0], fields[4], fields[3], 0, 0],
                    EVTCHNOP_BIND_VIRQ => {
                        [fields[2], self.m(0, 8) as u32, fields[4], fields[3], 0, 0]
                    }
                    EVTCHNOP_BIND_IPI => [self.m(0, 8) as u32, fields[4], 0, 0, 0, 0],
                    EVTCHNOP_BIND_VCPU => [fields[0], self.m(0, 6) as u32, 0, 0, 0, 0],
                    _ => [fields[0], fields[4], fields[5], fields[4], fields[5], 0],
                };
                if self.rng.chance(1, 8) {
                    self.wptr(24)
                } else {
                    match self.alloc(24) {
                        Some(va) => {
                            // SAFETY: inside the 24 bytes just allocated.
                            unsafe { put(va, words) };
                            out = match cmd {
                                EVTCHNOP_ALLOC_UNBOUND | EVTCHNOP_BIND_IPI => Some(va + 4),
                                EVTCHNOP_BIND_INTERDOMAIN | EVTCHNOP_BIND_VIRQ => Some(va + 8),
                                _ => None,
                            };
                            va
                        }
                        None => self.bad_ptr(),
                    }
                }
            }
            _ => self.junk(),
        };
        ([cmd, arg, self.junk(), self.junk(), self.junk()], out)
    }

    /// A grant reference worth trying.
    fn gref(&mut self) -> u64 {
        let v = match self.rng.below(4) {
            0 | 1 => self.rng.below(16),
            2 => self.rng.below(1024),
            _ => self
                .rng
                .pick(&[511, 512, 1023, 1024, 2047, 2048, 0xffff_ffff, 1 << 32]),
        };
        self.m(v, 10)
    }

    /// Refreshes the grant entry `gref` of the fuzzer's grant frames.
    fn touch_grant(&mut self, gref: u64) {
        if gref < 1024 && self.rng.chance(1, 2) {
            let entry = self.env.grant_entry(&mut self.rng);
            let g = self.env.grant[(gref / 512) as usize % self.env.grant.len()];
            self.env.write_grant(g, (gref % 512) as usize, entry);
        }
    }

    /// A host address for a grant mapping: never in a table the fuzzer runs
    /// on (a grant may legitimately fill an empty entry there, GNT-3, which
    /// the integrity check would take for a write that had to be refused),
    /// nor next to the edge page, which must stay unmapped.
    fn host_addr(&mut self) -> u64 {
        let va = self.va();
        if (va >> 39) & 0x1ff == EDGE_SLOT as u64 || self.env.slot_of_va(va) == Slot::Protected {
            WINDOW + self.rng.below(512) * PAGE_SIZE
        } else {
            va
        }
    }

    /// `grant_table_op(cmd, ops, count)`.
    fn grant(&mut self, post: &mut Post) -> [u64; 5] {
        const CMDS: [u64; 6] = [
            GNTTABOP_MAP_GRANT_REF,
            GNTTABOP_UNMAP_GRANT_REF,
            GNTTABOP_SETUP_TABLE,
            GNTTABOP_COPY,
            GNTTABOP_QUERY_SIZE,
            3,
        ];
        let i = self.rng.weighted(&[10, 8, 10, 20, 6, 4]);
        let cmd = self.m(CMDS[i], 16);
        let (ops, count) = match cmd {
            GNTTABOP_SETUP_TABLE => {
                let list = self.place(8, 4, 0);
                for i in 0..4 {
                    let mfn = match self.rng.below(10) {
                        0..=5 => self.env.grant[self.rng.index(self.env.grant.len())],
                        _ => self.mfn_any(),
                    };
                    let mfn = self.m(mfn, 10);
                    let mfn = if self.env.grant_table_safe(mfn) {
                        mfn
                    } else {
                        self.env.grant[self.rng.index(self.env.grant.len())]
                    };
                    self.put_at(list, i, mfn);
                }
                let nr = self.rng.pick(&[0, 1, 1, 2, 2, 2, 3, 4, 5, u32::MAX]);
                let setup = GnttabSetupTable {
                    nr_frames: self.m(u64::from(nr), 10) as u32,
                    pad: self.m(0, 20) as u32,
                    frame_list: match list {
                        // Off the edge: only `nr_frames - 1` entries readable.
                        Place::Edge { va, .. } => va + 8 * (4 - u64::from(nr.clamp(1, 4)) + 1),
                        other => other.va(),
                    },
                };
                let place = self.place(16, 1, 0);
                self.put_at(place, 0, setup);
                (
                    place.va(),
                    if self.rng.chance(1, 8) {
                        self.junk()
                    } else {
                        1
                    },
                )
            }
            GNTTABOP_QUERY_SIZE => {
                let count = if self.rng.chance(1, 8) {
                    self.junk()
                } else {
                    1
                };
                (self.wptr(8), count)
            }
            GNTTABOP_MAP_GRANT_REF => {
                let n = self.rng.index(5);
                let place = self.place(32, n, 0);
                for i in 0..n {
                    let gref = self.gref();
                    self.touch_grant(gref);
                    let op = GnttabMapGrantRef {
                        host_addr: self.host_addr(),
                        flags: self.rng.pick(&[0, 0, GNTMAP_READONLY, 2, u32::MAX]),
                        gref: gref as u32,
                        dom: self.domid(),
                        status: self.junk() as i32,
                        handle: self.junk() as u32,
                        pad: self.m(0, 20) as u32,
                    };
                    self.put_at(place, i, op);
                }
                self.grant_results(place, n, 32, 20, post);
                (place.va(), self.grant_count(place, n))
            }
            GNTTABOP_UNMAP_GRANT_REF => {
                let n = self.rng.index(5);
                let place = self.place(16, n, 0);
                for i in 0..n {
                    let handle = self.rng.pick(&[0, 1, 2, 3, 1023, 1024, u32::MAX]);
                    let op = GnttabUnmapGrantRef {
                        host_addr: self.va(),
                        handle: self.m(u64::from(handle), 8) as u32,
                        status: self.junk() as i32,
                    };
                    self.put_at(place, i, op);
                }
                self.grant_results(place, n, 16, 12, post);
                (place.va(), self.grant_count(place, n))
            }
            GNTTABOP_COPY => {
                let n = self.rng.index(6);
                let place = self.place(48, n, 0);
                for i in 0..n {
                    let op = self.copy_op();
                    self.put_at(place, i, op);
                }
                self.grant_results(place, n, 48, 40, post);
                (place.va(), self.grant_count(place, n))
            }
            _ => (self.junk(), self.junk()),
        };
        [cmd, ops, count, self.junk(), self.junk()]
    }

    /// Records where the statuses of `n` grant operations will be.
    fn grant_results(&mut self, place: Place, n: usize, stride: u64, offset: u64, post: &mut Post) {
        if let Place::Arena(va) = place {
            for i in 0..n as u64 {
                // SAFETY: the status field of op `i`, inside the allocation.
                unsafe { put(va + i * stride + offset, -1i32) };
            }
            post.elements = Some(Elements::Results {
                va,
                n,
                stride,
                offset,
                wide: false,
                kind: 3,
            });
        }
    }

    /// A count for `n` crafted grant operations: the hypervisor runs every
    /// operation it can read, so never past them except off the edge page.
    fn grant_count(&mut self, place: Place, n: usize) -> u64 {
        match (place, self.rng.below(20)) {
            (_, 0) => self.rng.pick(&[GNTTAB_BATCH_MAX + 1, u64::MAX, 1 << 32]),
            (Place::Edge { .. }, 1..=6) => n as u64 + 1 + self.rng.below(4),
            _ => n as u64,
        }
    }

    /// One side of a grant copy.
    fn copy_ptr(&mut self, dest: bool) -> (GnttabCopyPtr, bool) {
        let gref = self.rng.chance(1, 2);
        let ref_or_mfn = if gref {
            let g = self.gref();
            self.touch_grant(g);
            g
        } else if dest && self.rng.chance(2, 3) {
            self.env.scratch[self.rng.index(self.env.scratch.len())]
        } else {
            self.mfn_any()
        };
        let offset = if self.valid {
            self.rng.pick(&[0, 0, 8, 100, 2048])
        } else {
            self.rng
                .pick(&[0, 0, 8, 100, 2048, 4088, 4095, 4096, u32::MAX])
        };
        (
            GnttabCopyPtr {
                ref_or_mfn,
                domid: if gref && self.valid && self.rng.chance(4, 5) {
                    self.env.domid
                } else {
                    self.domid()
                },
                offset: self.m(u64::from(offset), 10) as u32,
            },
            gref,
        )
    }

    /// One grant copy; a destination the hypervisor may write is a scratch
    /// frame or one of the fuzzer's grants (which only name scratch frames).
    fn copy_op(&mut self) -> GnttabCopy {
        let (source, src_gref) = self.copy_ptr(false);
        let (mut dest, dst_gref) = self.copy_ptr(true);
        let mut flags = 0;
        if src_gref {
            flags |= GNTCOPY_SOURCE_GREF;
        }
        if dst_gref {
            flags |= GNTCOPY_DEST_GREF;
        }
        let flags = self.m(u64::from(flags), 12) as u32;
        let len = if self.valid {
            self.rng.pick(&[0, 1, 8, 64, 2048])
        } else {
            self.rng.pick(&[0, 1, 8, 64, 2048, 4096, 4097, u32::MAX])
        };
        let mut op = GnttabCopy {
            source,
            dest,
            len: self.m(u64::from(len), 10) as u32,
            flags,
            status: self.junk() as i32,
            pad: self.m(0, 30) as u32,
        };
        if op.flags & GNTCOPY_DEST_GREF == 0 && !self.env.whole_write_safe(dest.ref_or_mfn) {
            dest.ref_or_mfn = self.env.scratch[self.rng.index(self.env.scratch.len())];
            op.dest = dest;
        }
        op
    }

    // ----- iret -------------------------------------------------------

    /// One `iret` with a crafted frame; checks the outcome against HC-16.
    pub fn fuzz_iret(&mut self) {
        let landing = sys::iret_landing();
        let flags = match self.rng.weighted(&[50, 10, 5, 15, 5]) {
            0 => 0,
            1 => FRAME_FLAG_SYSCALL,
            2 => FRAME_FLAG_USER_MODE | 4,
            3 => self.rng.pick(&[4, 8, 1 << 63, u64::MAX, 0x100]),
            _ => FRAME_FLAG_USER_MODE,
        };
        let mut flags = self.m(flags, 10);
        let rip = match self.rng.weighted(&[60, 15, 10, 5, 5]) {
            0 => landing,
            1 => self.rng.pick(&HV_PTRS),
            2 => self.rng.pick(&NONCANON),
            3 => 0x40_0000 + self.rng.below(0x1000),
            _ => landing + 1,
        };
        let mut rip = self.m(rip, 12);
        let defined = flags & !FRAME_FLAGS_ALL == 0;
        if defined && flags & FRAME_FLAG_USER_MODE != 0 {
            // A user base pointer may exist (NEW_USER_BASEPTR is fuzzed).
            flags &= !FRAME_FLAG_USER_MODE;
        }
        if defined && is_guest_address(rip) {
            rip = landing;
        }
        let expect_landing = defined && is_guest_address(rip);
        let rflags = self
            .rng
            .pick(&[0x202, 0x2, 0x402, 0x102, 0x3202, 0x4_0202, 0x8d5, u64::MAX]);
        let tail = IretTail {
            flags,
            rip,
            cs: self.m(0x23, 4),
            rflags: self.m(rflags, 4),
            rsp: self.rng.pick(&[
                0,
                0x40_0000,
                0xffff_8000_0000_0000,
                0x8000_0000_0000_0000,
                u64::MAX,
            ]),
            ss: self.m(0x1b, 4),
        };
        let regs = [self.rng.next_u64(), self.junk(), self.rng.next_u64()];
        // SAFETY: a frame that can succeed returns to the landing label.
        let outcome = unsafe { sys::iret_call(tail, regs) };
        self.iret.calls += 1;
        self.calls += 1;
        let good = match outcome {
            IretOutcome::Landed { rax, rcx, r11 } => {
                self.iret.ok += 1;
                self.succeeded += 1;
                expect_landing && [rax, rcx, r11] == regs
            }
            IretOutcome::Refused(ret) => {
                self.failed += 1;
                !expect_landing && ret == hypercall_abi::Errno::EINVAL.to_return()
            }
        };
        if !good {
            self.errors += 1;
            pv_guest_kit::println!(
                "hcall-fuzz: ERROR: iret flags={:#x} rip={:#x} regs={:x?}: {:?}, expected {}",
                tail.flags,
                tail.rip,
                regs,
                outcome,
                if expect_landing {
                    "a return to the frame"
                } else {
                    "EINVAL"
                },
            );
        }
    }
}

/// The first number past every defined hypercall (the table may have holes
/// below it, which `from_number` reports as undefined).
fn first_undefined_nr() -> u64 {
    Hypercall::ALL
        .iter()
        .map(|h| u64::from(h.number()) + 1)
        .max()
        .unwrap_or(0)
}
