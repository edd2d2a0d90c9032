//! `devbus_op(cmd, arg)` (SPEC.md DEV-2 .. DEV-4) and the death hook
//! (DEV-5). Structures are copied in once, checked by the record table,
//! and written back for `CREATE` and `QUERY`. Every change raises
//! `VIRQ_DEVBUS` for the record's living sides.
//!
//! The caller's capability, the domains' existence and the event port are
//! checked under `DOMAINS` and `EVENTS`, held across the change, so no
//! domain can die between the check and the record (a death is processed
//! under `DOMAINS` too). Guest memory is only read before and written
//! after the locks are held.

use hypercall_abi::devbus::*;
use hypercall_abi::evtchn::VIRQ_DEVBUS;
use hypercall_abi::start_info::Capabilities;
use hypercall_abi::{DomId, Errno};

use super::records::Notify;
use super::DEVBUS;
use crate::domain::{DomainState, DomainTable, DOMAINS};
use crate::event::channels::{ChannelState, EventChannels};
use crate::event::delivery::{Notifier, EVENTS};
use crate::guest_memory::{read_obj, write_obj};
use crate::sched;

fn id_arg(arg: u64) -> Result<u32, Errno> {
    u32::try_from(arg).map_err(|_| Errno::ENOENT)
}

fn notify(table: &mut DomainTable, events: &mut EventChannels, doms: &[DomId]) {
    for &d in doms {
        events.send_virq(d, VIRQ_DEVBUS, &mut Notifier { table });
    }
}

/// The `devbus_op` hypercall.
pub fn devbus_op(cmd: u64, arg: u64) -> Result<u64, Errno> {
    let caller = sched::current().ok_or(Errno::EINVAL)?.domid;
    // Copy the argument in once, before any lock.
    enum Input {
        Create(DevbusCreate),
        Query(DevbusRecord),
        Publish(DevbusPublish),
        Connect(DevbusConnect),
        Id(u32),
    }
    let input = match cmd {
        DEVBUSOP_CREATE => Input::Create(read_obj(arg)?),
        DEVBUSOP_QUERY => Input::Query(read_obj(arg)?),
        DEVBUSOP_FRONT_PUBLISH => Input::Publish(read_obj(arg)?),
        DEVBUSOP_BACK_CONNECT => Input::Connect(read_obj(arg)?),
        DEVBUSOP_DESTROY | DEVBUSOP_CLOSE | DEVBUSOP_RESET => Input::Id(id_arg(arg)?),
        _ => return Err(Errno::EINVAL),
    };

    let mut table = DOMAINS.lock();
    let admin = table
        .domains
        .get(&caller)
        .ok_or(Errno::ESRCH)?
        .capabilities
        .contains(Capabilities::DEVBUS_ADMIN);
    let mut events = EVENTS.lock();
    let mut bus = DEVBUS.lock();
    let (result, changed): (Result<u64, Errno>, Notify) = match (cmd, input) {
        (DEVBUSOP_CREATE, Input::Create(mut create)) => {
            if !admin {
                return Err(Errno::EPERM);
            }
            let alive = |d: DomId| {
                table
                    .domains
                    .get(&d)
                    .is_some_and(|dom| dom.state == DomainState::Running)
            };
            let (id, n) = bus.create(&create, &alive)?;
            drop(bus);
            notify(&mut table, &mut events, &n);
            drop(events);
            drop(table);
            // Guest memory is written with no lock held.
            create.id = id;
            if let Err(e) = write_obj(arg, &create) {
                // The caller cannot learn the id: take the record back.
                let mut table = DOMAINS.lock();
                let mut events = EVENTS.lock();
                let gone = DEVBUS.lock().destroy(id);
                if let Ok(n) = gone {
                    notify(&mut table, &mut events, &n);
                }
                return Err(e);
            }
            return Ok(u64::from(id));
        }
        (DEVBUSOP_DESTROY, Input::Id(id)) => {
            if !admin {
                return Err(Errno::EPERM);
            }
            (Ok(0), bus.destroy(id)?)
        }
        (DEVBUSOP_QUERY, Input::Query(want)) => {
            let found = bus.query(caller, admin, want.id).ok_or(Errno::ESRCH)?;
            drop(bus);
            drop(events);
            drop(table);
            write_obj(arg, &found)?;
            return Ok(u64::from(found.id));
        }
        (DEVBUSOP_FRONT_PUBLISH, Input::Publish(p)) => {
            let port_ok = |backend: DomId, port: u32| {
                matches!(
                    events.status(caller, port),
                    Ok((ChannelState::Unbound { remote }, _)) if remote == backend
                )
            };
            let n = bus.publish(caller, &p, &port_ok)?;
            (Ok(0), n)
        }
        (DEVBUSOP_BACK_CONNECT, Input::Connect(c)) => (Ok(0), bus.connect(caller, &c)?),
        (DEVBUSOP_CLOSE, Input::Id(id)) => (Ok(0), bus.close(caller, id)?),
        (DEVBUSOP_RESET, Input::Id(id)) => (Ok(0), bus.reset(caller, id)?),
        _ => return Err(Errno::EINVAL),
    };
    drop(bus);
    notify(&mut table, &mut events, &changed);
    result
}

/// DEV-5: a domain was removed; close its side of every record and tell the
/// living peers. Called with `DOMAINS` held (as `table`), before `EVENTS`
/// forgets the domain or after: VIRQs only go to living domains.
pub fn domain_died(table: &mut DomainTable, domid: DomId) {
    let peers = DEVBUS.lock().domain_died(domid);
    if peers.is_empty() {
        return;
    }
    let mut events = EVENTS.lock();
    notify(table, &mut events, &peers);
}
