//! The devbus client (SPEC.md DEV-2 .. DEV-4): typed wrappers of
//! `devbus_op` and `VIRQ_DEVBUS` bound once per domain, with a change
//! counter that waiters re-check.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use hypercall_abi::devbus::*;
use hypercall_abi::evtchn::VIRQ_DEVBUS;
use hypercall_abi::hypercall::Hypercall;
use hypercall_abi::Errno;
use spin::Once;

use crate::events::{self, Port};
use crate::hypercall::hypercall_raw;

static VIRQ_PORT: Once<Result<Port, Errno>> = Once::new();
static CHANGES: AtomicU64 = AtomicU64::new(0);

fn on_change(_port: Port) {
    CHANGES.fetch_add(1, Ordering::SeqCst);
}

/// Binds `VIRQ_DEVBUS` (once) so that record changes wake [`events::wait_until`].
pub fn watch() -> Result<Port, Errno> {
    *VIRQ_PORT.call_once(|| {
        let port = events::bind_virq(VIRQ_DEVBUS)?;
        events::set_handler(port, on_change);
        Ok(port)
    })
}

/// Whether [`watch`] bound `VIRQ_DEVBUS` (so [`changes`] moves on every
/// change of this domain's records, DEV-4).
pub fn watching() -> bool {
    matches!(VIRQ_PORT.get(), Some(Ok(_)))
}

/// `VIRQ_DEVBUS` events seen so far.
pub fn changes() -> u64 {
    CHANGES.load(Ordering::SeqCst)
}

fn op(cmd: u64, arg: u64) -> Result<u64, Errno> {
    // SAFETY: every `arg` passed here is either a plain number or the
    // address of a live, exclusively borrowed ABI structure of the size the
    // sub-command reads and writes.
    Errno::check(unsafe { hypercall_raw(Hypercall::DevbusOp.number(), [cmd, arg, 0, 0, 0]) })
}

/// `DEVBUSOP_CREATE` (needs `DEVBUS_ADMIN`); returns the new id.
pub fn create(config: &DevbusCreate) -> Result<u32, Errno> {
    let mut c = *config;
    op(DEVBUSOP_CREATE, &mut c as *mut DevbusCreate as u64)?;
    Ok(c.id)
}

/// `DEVBUSOP_DESTROY`.
pub fn destroy(id: u32) -> Result<(), Errno> {
    op(DEVBUSOP_DESTROY, u64::from(id)).map(drop)
}

/// `DEVBUSOP_QUERY`: the first record with id `>= from` this domain may see.
pub fn query(from: u32) -> Result<DevbusRecord, Errno> {
    let mut r = DevbusRecord {
        id: from,
        ..DevbusRecord::default()
    };
    op(DEVBUSOP_QUERY, &mut r as *mut DevbusRecord as u64)?;
    Ok(r)
}

/// The record `id`, if it exists and is visible.
pub fn get(id: u32) -> Result<Option<DevbusRecord>, Errno> {
    match query(id) {
        Ok(r) if r.id == id => Ok(Some(r)),
        Ok(_) | Err(Errno::ESRCH) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every record this domain may see, by id.
pub fn records() -> Result<Vec<DevbusRecord>, Errno> {
    let mut out = Vec::new();
    let mut from = 0u32;
    loop {
        match query(from) {
            Ok(r) => {
                out.push(r);
                match r.id.checked_add(1) {
                    Some(next) => from = next,
                    None => return Ok(out),
                }
            }
            Err(Errno::ESRCH) => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// `DEVBUSOP_FRONT_PUBLISH`.
pub fn publish(p: &DevbusPublish) -> Result<(), Errno> {
    let mut p = *p;
    op(DEVBUSOP_FRONT_PUBLISH, &mut p as *mut DevbusPublish as u64).map(drop)
}

/// `DEVBUSOP_BACK_CONNECT`.
pub fn connect(c: &DevbusConnect) -> Result<(), Errno> {
    let mut c = *c;
    op(DEVBUSOP_BACK_CONNECT, &mut c as *mut DevbusConnect as u64).map(drop)
}

/// `DEVBUSOP_CLOSE`.
pub fn close(id: u32) -> Result<(), Errno> {
    op(DEVBUSOP_CLOSE, u64::from(id)).map(drop)
}

/// `DEVBUSOP_RESET`.
pub fn reset(id: u32) -> Result<(), Errno> {
    op(DEVBUSOP_RESET, u64::from(id)).map(drop)
}

/// Blocks until `condition(record)` holds for record `id` (or it is gone:
/// `None`), re-reading it after every `VIRQ_DEVBUS`.
pub fn wait_for(
    id: u32,
    mut condition: impl FnMut(&DevbusRecord) -> bool,
) -> Result<Option<DevbusRecord>, Errno> {
    watch()?;
    let mut outcome = Ok(None);
    events::wait_until(|| match get(id) {
        Ok(Some(r)) if condition(&r) => {
            outcome = Ok(Some(r));
            true
        }
        Ok(Some(_)) => false,
        Ok(None) => {
            outcome = Ok(None);
            true
        }
        Err(e) => {
            outcome = Err(e);
            true
        }
    });
    outcome
}

/// Brings record `id` to `INITIALISING` with nothing published, for a
/// frontend about to (re)connect (DEV-3): closes this side of a half-closed
/// record, waits for `CLOSED`, then resets. `Ok(false)` if the record is gone.
pub fn settle_frontend(id: u32) -> Result<bool, Errno> {
    let Some(r) = get(id)? else {
        return Ok(false);
    };
    match r.state {
        DEVBUS_STATE_INITIALISING if r.nr_ring_pages == 0 => return Ok(true),
        DEVBUS_STATE_CLOSED => {}
        _ => {
            close(id)?;
            if wait_for(id, |r| r.state == DEVBUS_STATE_CLOSED)?.is_none() {
                return Ok(false);
            }
        }
    }
    reset(id)?;
    Ok(true)
}
