//! `evtchn_op` (SPEC.md EVT-1 .. EVT-4). For `SEND`, `CLOSE` and `UNMASK` the
//! argument is the port number itself (no structure to copy in); the other
//! operations take a structure that is copied in once and written back.

use hypercall_abi::evtchn::*;
use hypercall_abi::{DomId, Errno};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::domain::DOMAINS;
use crate::event::channels::ChannelState;
use crate::event::delivery::{unmask, Notifier, EVENTS};
use crate::guest_memory::{read_obj, write_obj};
use crate::sched;

fn port_arg(arg: u64) -> Result<Port, Errno> {
    Port::try_from(arg).map_err(|_| Errno::EINVAL)
}

/// Reads a `T` at `arg`, lets `f` fill in its outputs, writes it back.
fn in_out<T: FromBytes + IntoBytes + Immutable>(
    arg: u64,
    f: impl FnOnce(&mut T) -> Result<(), Errno>,
) -> Result<u64, Errno> {
    let mut value: T = read_obj(arg)?;
    f(&mut value)?;
    write_obj(arg, &value)?;
    Ok(0)
}

/// As [`in_out`] for the operations that open a port: if the result cannot
/// be written back, the port `opened` names is closed again, so a failed call
/// leaves nothing allocated that the guest was never told about (XSA-188).
fn in_out_opening<T: FromBytes + IntoBytes + Immutable>(
    dom: DomId,
    arg: u64,
    f: impl FnOnce(&mut T) -> Result<(), Errno>,
    opened: impl FnOnce(&T) -> Port,
) -> Result<u64, Errno> {
    let mut value: T = read_obj(arg)?;
    f(&mut value)?;
    if let Err(e) = write_obj(arg, &value) {
        // The port was opened by `f` under this domain's own call; closing
        // it again cannot fail.
        let _ = EVENTS.lock().close(dom, opened(&value));
        return Err(e);
    }
    Ok(0)
}

fn vcpu_exists(dom: DomId, vcpu: u32) -> Result<(), Errno> {
    let table = DOMAINS.lock();
    match table.domains.get(&dom) {
        Some(d) if (vcpu as usize) < d.vcpus.len() => Ok(()),
        _ => Err(Errno::EINVAL),
    }
}

pub fn evtchn_op(cmd: u64, arg: u64) -> Result<u64, Errno> {
    let dom = sched::current().ok_or(Errno::EINVAL)?.domid;
    match cmd {
        EVTCHNOP_SEND => {
            let port = port_arg(arg)?;
            let mut table = DOMAINS.lock();
            let mut events = EVENTS.lock();
            events
                .send(dom, port, &mut Notifier { table: &mut table })
                .map(|()| 0)
        }
        EVTCHNOP_CLOSE => {
            let port = port_arg(arg)?;
            let mut events = EVENTS.lock();
            let pirq = match events.status(dom, port) {
                Ok((ChannelState::Pirq(vector), _)) => Some(vector),
                _ => None,
            };
            events.close(dom, port)?;
            drop(events);
            // A device interrupt's port: mask the source, free the vector (PDEV-5).
            if let Some(vector) = pirq {
                crate::platform::irq::unbind(vector);
            }
            Ok(0)
        }
        EVTCHNOP_UNMASK => {
            let port = port_arg(arg)?;
            let table = DOMAINS.lock();
            if !EVENTS.lock().is_open(dom, port) {
                return Err(Errno::EINVAL);
            }
            let domain = table.domains.get(&dom).ok_or(Errno::ESRCH)?;
            unmask(domain, port);
            Ok(0)
        }
        EVTCHNOP_ALLOC_UNBOUND => in_out_opening(
            dom,
            arg,
            |a: &mut EvtchnAllocUnbound| {
                a.port = EVENTS.lock().alloc_unbound(dom, a.remote_dom)?;
                Ok(())
            },
            |a| a.port,
        ),
        EVTCHNOP_BIND_INTERDOMAIN => in_out_opening(
            dom,
            arg,
            |b: &mut EvtchnBindInterdomain| {
                if b.pad != 0 {
                    return Err(Errno::EINVAL);
                }
                b.local_port = EVENTS
                    .lock()
                    .bind_interdomain(dom, b.remote_dom, b.remote_port)?;
                Ok(())
            },
            |b| b.local_port,
        ),
        EVTCHNOP_BIND_VIRQ => in_out_opening(
            dom,
            arg,
            |b: &mut EvtchnBindVirq| {
                if b.pad != 0 {
                    return Err(Errno::EINVAL);
                }
                vcpu_exists(dom, b.vcpu)?;
                b.port = EVENTS.lock().bind_virq(dom, b.virq, b.vcpu)?;
                Ok(())
            },
            |b| b.port,
        ),
        EVTCHNOP_BIND_IPI => in_out_opening(
            dom,
            arg,
            |b: &mut EvtchnBindIpi| {
                vcpu_exists(dom, b.vcpu)?;
                b.port = EVENTS.lock().bind_ipi(dom, b.vcpu)?;
                Ok(())
            },
            |b| b.port,
        ),
        EVTCHNOP_BIND_VCPU => {
            let b: EvtchnBindVcpu = read_obj(arg)?;
            vcpu_exists(dom, b.vcpu)?;
            EVENTS.lock().bind_vcpu(dom, b.port, b.vcpu).map(|()| 0)
        }
        EVTCHNOP_STATUS => in_out(arg, |s: &mut EvtchnStatus| {
            let (state, vcpu) = EVENTS.lock().status(dom, s.port)?;
            s.vcpu = vcpu;
            s.pad = 0;
            (s.status, s.remote_dom_or_virq, s.remote_port) = match state {
                ChannelState::Free => (EVTCHNSTAT_CLOSED, 0, 0),
                ChannelState::Unbound { remote } => (EVTCHNSTAT_UNBOUND, remote, 0),
                ChannelState::Interdomain {
                    remote,
                    remote_port,
                } => (EVTCHNSTAT_INTERDOMAIN, remote, remote_port),
                ChannelState::Virq(v) => (EVTCHNSTAT_VIRQ, v, 0),
                ChannelState::Ipi => (EVTCHNSTAT_IPI, 0, 0),
                ChannelState::Pirq(_) => (EVTCHNSTAT_PIRQ, 0, 0),
            };
            Ok(())
        }),
        _ => Err(Errno::EINVAL),
    }
}
