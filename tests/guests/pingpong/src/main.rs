//! `pingpong`: two domains talking over a granted ring and an event channel
//! (SPEC.md §8, §8b; `hypercall_abi::ring`), plus the helper domains of the
//! grant-attacker scenario and of the event/grant benchmarks.
//!
//! Command line: `role=ping|pong|victim|echo peer=<domid>` and per role:
//! - `ping` (the frontend, [`ping`]): `count=<n>` (default 100000),
//!   `watch_peer=1` to notice a peer that dies mid-exchange;
//! - `pong` (the backend, [`pong`]): `peer_port=<port> gref=<ref>`,
//!   `count=<n>`, `die_after=<n>` to crash on purpose after `n` responses;
//! - `victim` ([`victim`]): grants pages to `grant-attacker` and checks that
//!   it keeps working;
//! - `echo` ([`echo`]): answers `hvbench`'s events and grants it a page;
//!   `peer_port=<port>`.
//!
//! # Boot-time rendezvous (no xenstore yet)
//! The scenarios boot the two ends as consecutive domains and tell each the
//! other's domid (`peer=`). The numbers the connecting side needs are fixed
//! by convention, documented here and checked at run time by the side that
//! allocates them:
//! - the *first* port a domain allocates is port 1 (hv-core allocates the
//!   lowest free port, and port 0 is never used), so the granting side
//!   allocates its unbound port before binding anything else;
//! - the *first* grant of a fresh [`pv_guest_kit::grants::GrantTable`] is
//!   reference 0, the second 1 (the kit hands out the lowest free reference).
//!
//! The connecting side retries (`sched_yield`) while the port is not there
//! yet (`EINVAL`) or the grant not yet written (`EPERM`/`ENOENT`).
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

mod echo;
mod ping;
mod pong;
mod proto;
mod victim;

use hypercall_abi::start_info::StartInfo;
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::cmdline::Args;
use pv_guest_kit::events::{self, Port};
use pv_guest_kit::grants::{self, GrantRef, Mapping};
use pv_guest_kit::hypercall::sched_yield;

pv_guest_kit::entry!(kmain);

fn kmain(si: &'static StartInfo) {
    let args = Args::new(si.cmdline_str());
    let peer = number(&args, "peer", None) as DomId;
    match args.get("role") {
        Some("ping") => ping::run(&args, peer),
        Some("pong") => pong::run(&args, peer),
        Some("victim") => victim::run(peer),
        Some("echo") => echo::run(&args, peer),
        other => panic!("pingpong: role={other:?}: expected ping, pong, victim or echo"),
    }
}

/// The numeric argument `key`, or `default`; panics if it is missing
/// without a default or not a number.
fn number(args: &Args<'_>, key: &str, default: Option<u64>) -> u64 {
    match (args.get(key), default) {
        (None, Some(value)) => value,
        (None, None) => panic!("pingpong: missing {key}="),
        (Some(text), _) => args
            .get_u64(key)
            .unwrap_or_else(|| panic!("pingpong: {key}={text} is not a number")),
    }
}

/// Tries `attempt` until it stops failing with one of `transient`, yielding
/// in between (the peer has not set things up yet, possibly on another
/// pCPU); panics after 10 s of system time.
fn retry<T>(what: &str, transient: &[Errno], mut attempt: impl FnMut() -> Result<T, Errno>) -> T {
    const GIVE_UP_NS: u64 = 10_000_000_000;
    let deadline = pv_guest_kit::time::now_ns() + GIVE_UP_NS;
    while pv_guest_kit::time::now_ns() < deadline {
        match attempt() {
            Ok(value) => return value,
            Err(errno) if transient.contains(&errno) => sched_yield(),
            Err(errno) => panic!("pingpong: {what}: {errno}"),
        }
    }
    panic!("pingpong: {what}: still failing after 10 s")
}

/// Binds to `peer`'s unbound `peer_port`, retrying until the peer has
/// allocated it.
fn bind_to(peer: DomId, peer_port: Port) -> Port {
    retry(
        "binding to the peer's port",
        &[Errno::EINVAL, Errno::ESRCH],
        || events::bind_interdomain(peer, peer_port),
    )
}

/// Maps `peer`'s grant `gref` at `va`, retrying until the peer has granted it.
fn map_from(peer: DomId, gref: GrantRef, va: u64, readonly: bool) -> Mapping {
    retry(
        "mapping the peer's grant",
        &[Errno::EPERM, Errno::ENOENT],
        || grants::map(peer, gref, va, readonly),
    )
}

/// Event handler that only wakes [`events::wait_until`].
fn wake(_port: Port) {}
