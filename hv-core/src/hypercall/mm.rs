//! Guest page-table hypercalls (SPEC.md MM-4 .. MM-6): `mmu_update`,
//! `update_va_mapping`, `mmuext_op`, on top of the validation engine in
//! `mm::pagetable`. Batches are copied in 64 requests at a time and continued
//! (the guest re-enters with advanced arguments) after each chunk.

use hypercall_abi::layout::is_guest_address;
use hypercall_abi::mm::*;
use hypercall_abi::{DomId, Errno, Hypercall};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::Flow;
use crate::arch::cpu::{copy_page, invlpg, write_cr3, zero_page};
use crate::arch::entry::TrapFrame;
use crate::domain::{VcpuId, DOMAINS};
use crate::guest_memory::{copy_from_guest, write_obj, GuestRange};
use crate::mm::live::{flush_tlb, set_m2p, with_page_tables, DirectTables};
use crate::mm::pagetable::{entry_mfn, present, PageTables, TableMemory};
use crate::mm::{mfn_to_virt, Mfn, Owner};
use crate::sched;

/// Requests handled per entry into the hypervisor before a continuation.
pub const CHUNK: usize = 64;
/// Largest batch inside a multicall, where there is no continuation.
pub const NESTED_MAX: u64 = 512;

/// Length of the SYSCALL instruction the stubs use: a continuation rewinds
/// the guest by this much so that it enters again.
const SYSCALL_LEN: u64 = 2;

/// Sets up the frame so the guest re-enters hypercall `nr` with the
/// arguments already in the frame (Xen's hypercall continuation).
pub fn continue_hypercall(frame: &mut TrapFrame, nr: Hypercall) {
    frame.rip = frame.rip.wrapping_sub(SYSCALL_LEN);
    frame.rax = u64::from(nr.number());
}

fn current_domid() -> Result<DomId, Errno> {
    sched::current().map(|id| id.domid).ok_or(Errno::EINVAL)
}

/// Runs a batch of `T` from `(rdi = list, rsi = count, rdx = done, r10 =
/// progress)`, `apply` handling each chunk and saying how many it completed.
fn run_batch<T: FromBytes + IntoBytes + Immutable + Copy>(
    frame: &mut TrapFrame,
    nr: Hypercall,
    may_continue: bool,
    mut apply: impl FnMut(&[T]) -> (usize, Result<(), Errno>),
) -> Flow {
    let (list, count, done_ptr, progress) = (frame.rdi, frame.rsi, frame.rdx, frame.r10);
    let limit = if may_continue {
        MMU_BATCH_MAX
    } else {
        NESTED_MAX
    };
    if count > limit {
        return Flow::Done(Err(Errno::E2BIG));
    }
    let size = core::mem::size_of::<T>() as u64;
    // Filled per chunk with exactly the elements needed: zeroing a whole
    // 64-element buffer would cost more than a small batch itself.
    let mut buf: heapless::Vec<T, CHUNK> = heapless::Vec::new();
    let mut done = 0u64;
    let result = loop {
        if done == count {
            break Ok(());
        }
        if may_continue && done > 0 {
            frame.rdi = list.wrapping_add(done * size);
            frame.rsi = count - done;
            frame.r10 = progress.wrapping_add(done);
            continue_hypercall(frame, nr);
            return Flow::Continued;
        }
        let n = (count - done).min(CHUNK as u64) as usize;
        buf.clear();
        buf.extend((0..n).map(|_| T::new_zeroed()));
        let chunk = buf.as_mut_slice();
        let Some(range) = list
            .checked_add(done * size)
            .and_then(|va| GuestRange::new(va, n as u64 * size).ok())
        else {
            break Err(Errno::EFAULT);
        };
        if let Err(e) = copy_from_guest(chunk.as_mut_bytes(), range) {
            break Err(e);
        }
        let (completed, r) = apply(chunk);
        done += completed as u64;
        if let Err(e) = r {
            break Err(e);
        }
    };
    let written = if done_ptr != 0 {
        write_obj(done_ptr, &progress.wrapping_add(done))
    } else {
        Ok(())
    };
    Flow::Done(result.and(written).map(|()| 0))
}

fn normal_update(
    pt: &mut PageTables<'_, 'static, DirectTables>,
    req: &MmuUpdate,
    dom: DomId,
) -> Result<(), Errno> {
    match req.ptr & MMU_CMD_MASK {
        MMU_NORMAL_PT_UPDATE => {
            let addr = req.ptr & !MMU_CMD_MASK;
            if addr & 7 != 0 {
                return Err(Errno::EINVAL);
            }
            pt.update_entry(addr >> 12, ((addr & 0xfff) >> 3) as usize, req.val, dom)
                .map_err(|e| e.errno())
        }
        MMU_MACHPHYS_UPDATE => {
            let mfn = req.ptr >> 12;
            if pt.frames.get(mfn).map(|f| f.owner) != Some(Owner::Domain(dom)) {
                return Err(Errno::EPERM);
            }
            set_m2p(mfn, req.val);
            Ok(())
        }
        _ => Err(Errno::EINVAL),
    }
}

/// `mmu_update` (MM-4).
pub fn mmu_update(frame: &mut TrapFrame, may_continue: bool) -> Flow {
    let dom = match current_domid() {
        Ok(d) => d,
        Err(e) => return Flow::Done(Err(e)),
    };
    run_batch::<MmuUpdate>(frame, Hypercall::MmuUpdate, may_continue, |chunk| {
        with_page_tables(|pt| {
            for (i, req) in chunk.iter().enumerate() {
                if let Err(e) = normal_update(pt, req, dom) {
                    return (i, Err(e));
                }
            }
            (chunk.len(), Ok(()))
        })
        .unwrap_or((0, Err(Errno::EINVAL)))
    })
}

/// The L1 table and index that map `va` in the address space rooted at the
/// validated L4 `root` of `dom`: `-EINVAL` when an upper entry is missing.
pub fn walk_to_l1(
    pt: &PageTables<'_, 'static, DirectTables>,
    root: Mfn,
    va: u64,
    dom: DomId,
) -> Result<(Mfn, usize), Errno> {
    let mut t: Mfn = root;
    for level in (2..=4u32).rev() {
        let e = pt
            .mem
            .read_entry(t, ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize);
        if !present(e) {
            return Err(Errno::EINVAL);
        }
        t = entry_mfn(e);
    }
    if pt.table_level(t, dom) != Ok(1) {
        return Err(Errno::EINVAL);
    }
    Ok((t, ((va >> 12) & 0x1ff) as usize))
}

/// `update_va_mapping` (MM-5).
pub fn update_va_mapping(va: u64, val: u64, flags: u64) -> Result<u64, Errno> {
    if !is_guest_address(va) || flags & !(UVMF_FLUSHTYPE_MASK | UVMF_ALL) != 0 {
        return Err(Errno::EINVAL);
    }
    let flush = flags & UVMF_FLUSHTYPE_MASK;
    if flush == UVMF_FLUSHTYPE_MASK {
        return Err(Errno::EINVAL);
    }
    let id = sched::current().ok_or(Errno::EINVAL)?;
    let table = DOMAINS.lock();
    let vcpu = table
        .domains
        .get(&id.domid)
        .and_then(|d| d.vcpus.get(id.vcpu as usize))
        .ok_or(Errno::ESRCH)?;
    let root = vcpu.kernel_l4;
    with_page_tables(|pt| {
        let (l1, index) = walk_to_l1(pt, root, va, id.domid)?;
        pt.update_entry(l1, index, val, id.domid)
            .map_err(|e| e.errno())
    })
    .unwrap_or(Err(Errno::EINVAL))?;
    drop(table);
    // UVMF_ALL: the domain's vCPUs may run on any CPU.
    match (flush, flags & UVMF_ALL != 0) {
        (UVMF_INVLPG, false) => invlpg(va),
        (UVMF_INVLPG, true) => crate::mm::tlb::flush_page_everywhere(va),
        (UVMF_TLB_FLUSH, false) => flush_tlb(),
        (UVMF_TLB_FLUSH, true) => crate::mm::tlb::flush_all(),
        _ => {}
    }
    Ok(0)
}

fn one_mmuext(op: &MmuextOp, id: VcpuId) -> Result<(), Errno> {
    let dom = id.domid;
    if op.pad != 0 {
        return Err(Errno::EINVAL);
    }
    let needs_arg2 = op.cmd == MMUEXT_COPY_PAGE;
    if !needs_arg2 && op.arg2 != 0 {
        return Err(Errno::EINVAL);
    }
    let mut table = DOMAINS.lock();
    let errno = |e: crate::mm::pagetable::MmError| e.errno();
    match op.cmd {
        MMUEXT_PIN_L1_TABLE..=MMUEXT_PIN_L4_TABLE => {
            with_page_tables(|pt| pt.pin(op.arg1, op.cmd + 1, dom).map_err(errno))
                .unwrap_or(Err(Errno::EINVAL))
        }
        MMUEXT_UNPIN_TABLE => {
            if table.is_base_pointer(dom, op.arg1) {
                return Err(Errno::EBUSY);
            }
            with_page_tables(|pt| pt.unpin(op.arg1, dom).map_err(errno))
                .unwrap_or(Err(Errno::EINVAL))
        }
        MMUEXT_NEW_BASEPTR | MMUEXT_NEW_USER_BASEPTR => {
            let vcpu = table.vcpu_mut(id).ok_or(Errno::ESRCH)?;
            with_page_tables(|pt| {
                let user = op.cmd == MMUEXT_NEW_USER_BASEPTR;
                if !(user && op.arg1 == 0) {
                    pt.get_baseptr(op.arg1, dom).map_err(errno)?;
                }
                let old = if user {
                    core::mem::replace(&mut vcpu.user_l4, (op.arg1 != 0).then_some(op.arg1))
                } else {
                    Some(core::mem::replace(&mut vcpu.kernel_l4, op.arg1))
                };
                if user == vcpu.user_mode {
                    // SAFETY: the new L4 was just validated, which installed
                    // the hypervisor's slots in it.
                    unsafe { write_cr3(vcpu.active_cr3()) };
                }
                if let Some(old) = old {
                    pt.put_baseptr(old);
                }
                Ok(())
            })
            .unwrap_or(Err(Errno::EINVAL))
        }
        MMUEXT_TLB_FLUSH_LOCAL | MMUEXT_TLB_FLUSH_MULTI | MMUEXT_TLB_FLUSH_ALL => {
            if op.arg1 != 0 {
                return Err(Errno::EINVAL);
            }
            if op.cmd == MMUEXT_TLB_FLUSH_LOCAL {
                flush_tlb();
            } else {
                // The domain's other vCPUs may run on any CPU (shootdown).
                crate::mm::tlb::flush_all();
            }
            Ok(())
        }
        MMUEXT_INVLPG_LOCAL | MMUEXT_INVLPG_MULTI | MMUEXT_INVLPG_ALL => {
            if !is_guest_address(op.arg1) {
                return Err(Errno::EINVAL);
            }
            if op.cmd == MMUEXT_INVLPG_LOCAL {
                invlpg(op.arg1);
            } else {
                crate::mm::tlb::flush_page_everywhere(op.arg1);
            }
            Ok(())
        }
        MMUEXT_CLEAR_PAGE => with_page_tables(|pt| {
            pt.get_writable(op.arg1, dom).map_err(errno)?;
            // SAFETY: a frame the caller owns, now typed writable (not a page
            // table), mapped by the direct map.
            unsafe { zero_page(mfn_to_virt(op.arg1)) };
            pt.put_writable(op.arg1);
            Ok(())
        })
        .unwrap_or(Err(Errno::EINVAL)),
        MMUEXT_COPY_PAGE => with_page_tables(|pt| {
            pt.get_writable(op.arg1, dom).map_err(errno)?;
            if let Err(e) = pt.get_page(op.arg2, dom) {
                pt.put_writable(op.arg1);
                return Err(e.errno());
            }
            if op.arg1 != op.arg2 {
                // SAFETY: both frames are the caller's and direct-mapped; the
                // destination is typed writable, so it is not a page table.
                unsafe { copy_page(mfn_to_virt(op.arg1), mfn_to_virt(op.arg2)) };
            }
            pt.put_page(op.arg2);
            pt.put_writable(op.arg1);
            Ok(())
        })
        .unwrap_or(Err(Errno::EINVAL)),
        _ => Err(Errno::EINVAL),
    }
}

/// `mmuext_op` (MM-6).
pub fn mmuext_op(frame: &mut TrapFrame, may_continue: bool) -> Flow {
    let Some(id) = sched::current() else {
        return Flow::Done(Err(Errno::EINVAL));
    };
    run_batch::<MmuextOp>(frame, Hypercall::MmuextOp, may_continue, |chunk| {
        for (i, op) in chunk.iter().enumerate() {
            if let Err(e) = one_mmuext(op, id) {
                return (i, Err(e));
            }
        }
        (chunk.len(), Ok(()))
    })
}
