//! `grant_table_op` (SPEC.md GNT-1 .. GNT-4): each operation of a batch is
//! copied in once, run, and answered with its own `status`; the call returns
//! 0 once the batch is done, or `-EFAULT` if the array cannot be read or a
//! status written. Batches are bounded (`GNTTAB_BATCH_MAX`) instead of
//! preempted.

use hypercall_abi::grant::*;
use hypercall_abi::layout::is_guest_address;
use hypercall_abi::{DomId, Errno};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::mm::walk_to_l1;
use crate::domain::DOMAINS;
use crate::grant::live::{DirectGrantMemory, GRANTS};
use crate::guest_memory::{copy_from_guest, read_obj, write_obj, GuestRange};
use crate::mm::live::{set_m2p, with_page_tables, M2P_INVALID};
use crate::mm::Mfn;
use crate::sched;

fn status_of(r: Result<(), Errno>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => -i32::from(e.0),
    }
}

/// Runs `f` on each of `count` `T`s at `ops`, writing each back.
fn each<T: FromBytes + IntoBytes + Immutable>(
    ops: u64,
    count: u64,
    mut f: impl FnMut(&mut T),
) -> Result<u64, Errno> {
    if count > GNTTAB_BATCH_MAX {
        return Err(Errno::E2BIG);
    }
    let size = core::mem::size_of::<T>() as u64;
    for i in 0..count {
        let va = ops.checked_add(i * size).ok_or(Errno::EFAULT)?;
        let mut op: T = read_obj(va)?;
        f(&mut op);
        write_obj(va, &op)?;
    }
    Ok(0)
}

fn kernel_root(dom: DomId, vcpu: u32) -> Result<Mfn, Errno> {
    let table = DOMAINS.lock();
    table
        .domains
        .get(&dom)
        .and_then(|d| d.vcpus.get(vcpu as usize))
        .map(|v| v.kernel_l4)
        .ok_or(Errno::ESRCH)
}

pub fn grant_table_op(cmd: u64, ops: u64, count: u64) -> Result<u64, Errno> {
    let id = sched::current().ok_or(Errno::EINVAL)?;
    let dom = id.domid;
    match cmd {
        GNTTABOP_SETUP_TABLE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let setup: GnttabSetupTable = read_obj(ops)?;
            if setup.pad != 0 || setup.nr_frames > GRANT_MAX_FRAMES {
                return Err(Errno::EINVAL);
            }
            let mut mfns = [0u64; GRANT_MAX_FRAMES as usize];
            let list = &mut mfns[..setup.nr_frames as usize];
            copy_from_guest(
                list.as_mut_bytes(),
                GuestRange::new(setup.frame_list, u64::from(setup.nr_frames) * 8)?,
            )?;
            let mut grants = GRANTS.lock();
            with_page_tables(|pt| grants.setup_table(pt, dom, list))
                .unwrap_or(Err(Errno::EINVAL))?;
            Ok(0)
        }
        GNTTABOP_QUERY_SIZE => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            let size = GnttabQuerySize {
                nr_frames: GRANTS.lock().table_frames(dom),
                max_nr_frames: GRANT_MAX_FRAMES,
            };
            write_obj(ops, &size)?;
            Ok(0)
        }
        GNTTABOP_MAP_GRANT_REF => {
            let root = kernel_root(dom, id.vcpu)?;
            each(ops, count, |op: &mut GnttabMapGrantRef| {
                let result = (|| {
                    if op.flags & !GNTMAP_READONLY != 0
                        || op.pad != 0
                        || !is_guest_address(op.host_addr)
                    {
                        return Err(Errno::EINVAL);
                    }
                    let write = op.flags & GNTMAP_READONLY == 0;
                    let mut grants = GRANTS.lock();
                    with_page_tables(|pt| {
                        let (l1, index) = walk_to_l1(pt, root, op.host_addr, dom)?;
                        grants.map(
                            &mut DirectGrantMemory,
                            pt,
                            dom,
                            op.dom,
                            op.gref,
                            write,
                            l1,
                            index,
                            op.host_addr,
                        )
                    })
                    .unwrap_or(Err(Errno::EINVAL))
                })();
                op.handle = *result.as_ref().unwrap_or(&u32::MAX);
                op.status = status_of(result.map(|_| ()));
            })
        }
        GNTTABOP_UNMAP_GRANT_REF => each(ops, count, |op: &mut GnttabUnmapGrantRef| {
            let mut grants = GRANTS.lock();
            // A device must lose the frame before the grant can end (PDEV-8).
            if grants
                .mapping(dom, op.handle)
                .is_some_and(|m| m.host_addr == op.host_addr)
            {
                super::physdev::grant_unmapping(dom, op.handle);
            }
            let result = with_page_tables(|pt| {
                grants.unmap(&mut DirectGrantMemory, pt, dom, op.handle, op.host_addr)
            })
            .unwrap_or(Err(Errno::EINVAL));
            if let Ok((m, freed)) = &result {
                // The mapping is gone from the tables; make sure no TLB keeps it
                // before the granter can reuse the frame.
                crate::mm::tlb::flush_page_everywhere(m.host_addr);
                if let Some(mfn) = freed {
                    set_m2p(*mfn, M2P_INVALID);
                }
            }
            op.status = status_of(result.map(|_| ()));
        }),
        GNTTABOP_COPY => each(ops, count, |op: &mut GnttabCopy| {
            let mut grants = GRANTS.lock();
            let result = with_page_tables(|pt| grants.copy(&mut DirectGrantMemory, pt, dom, op))
                .unwrap_or(Err(Errno::EINVAL));
            op.status = status_of(result);
        }),
        _ => Err(Errno::EINVAL),
    }
}
