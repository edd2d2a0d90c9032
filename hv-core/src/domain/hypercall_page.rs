//! The hypercall page: one 32-byte stub per hypercall number (SPEC.md §2.1,
//! HC-1). Guests `call` stub `n` at `page + 32 * n`; only hv-core knows how a
//! stub enters the hypervisor, so the mechanism can change without rebuilding
//! guests.

use hypercall_abi::hypercall::{HYPERCALL_SLOTS, HYPERCALL_STUB_SIZE};
use hypercall_abi::Hypercall;

/// Fills `page` with the stubs of this hypervisor; unused bytes are `int3`.
///
/// - Stub `n`: `mov eax, n; syscall; ret`.
/// - `iret`: `push rcx; push r11; push rax; mov eax, n; syscall; ud2` — it
///   builds the `IretContext` head on the guest stack and never returns.
pub fn write(page: &mut [u8; 4096]) {
    page.fill(0xcc);
    for (n, stub) in page
        .chunks_exact_mut(HYPERCALL_STUB_SIZE as usize)
        .take(HYPERCALL_SLOTS as usize)
        .enumerate()
    {
        let nr = (n as u32).to_le_bytes();
        let mov_eax = [0xb8, nr[0], nr[1], nr[2], nr[3]];
        if n as u32 == Hypercall::Iret.number() {
            let head = [0x51, 0x41, 0x53, 0x50];
            stub[..4].copy_from_slice(&head);
            stub[4..9].copy_from_slice(&mov_eax);
            stub[9..13].copy_from_slice(&[0x0f, 0x05, 0x0f, 0x0b]);
        } else {
            stub[..5].copy_from_slice(&mov_eax);
            stub[5..8].copy_from_slice(&[0x0f, 0x05, 0xc3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs() {
        let mut page = [0u8; 4096];
        write(&mut page);
        assert_eq!(&page[0..8], &[0xb8, 0, 0, 0, 0, 0x0f, 0x05, 0xc3]);
        assert_eq!(&page[32..40], &[0xb8, 1, 0, 0, 0, 0x0f, 0x05, 0xc3]);
        let iret = Hypercall::Iret.number() as usize * 32;
        assert_eq!(
            &page[iret..iret + 13],
            &[0x51, 0x41, 0x53, 0x50, 0xb8, 6, 0, 0, 0, 0x0f, 0x05, 0x0f, 0x0b]
        );
        assert_eq!(page[8], 0xcc);
        assert_eq!(page[4095], 0xcc);
    }
}
