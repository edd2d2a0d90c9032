//! The 16550 UARTs hv-core drives, polled, 115200 8N1: COM1 (0x3f8), its
//! console, and COM2 (0x2f8), the management UART lent to the toolstack.

use super::cpu::{inb, outb};

const COM1: u16 = 0x3f8;
const LSR: u16 = COM1 + 5;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Programs the 16550 at `base`: interrupts off, DLAB for divisor 1
/// (115200), 8N1, FIFOs on and cleared.
///
/// # Safety
/// `base` must be a UART hv-core owns (COM1, or COM2 once probed).
unsafe fn program_16550(base: u16) {
    // SAFETY: the caller's obligation; this is the standard set-up sequence.
    unsafe {
        outb(base + 1, 0x00);
        outb(base + 3, 0x80);
        outb(base, 0x01);
        outb(base + 1, 0x00);
        outb(base + 3, 0x03);
        outb(base + 2, 0xc7);
        outb(base + 4, 0x03);
    }
}

/// A received byte of the 16550 at `base`, if one is waiting.
///
/// # Safety
/// `base` must be a UART hv-core owns and has programmed.
unsafe fn receive(base: u16) -> Option<u8> {
    // SAFETY: the caller's obligation; reading LSR, then RBR.
    unsafe { (inb(base + 5) & LSR_DATA_READY != 0).then(|| inb(base)) }
}

/// COM1, owned by hv-core's console (see `crate::console`).
pub struct Serial {
    _private: (),
}

impl Serial {
    /// Programs COM1 and returns the handle. Call once, at boot.
    pub fn init() -> Serial {
        // SAFETY: COM1 is hv-core's own device.
        unsafe { program_16550(COM1) };
        Serial { _private: () }
    }

    /// Sends one byte, waiting for room in the transmitter.
    pub fn write_byte(&mut self, byte: u8) {
        // SAFETY: reading LSR and writing THR of our own UART.
        unsafe {
            while inb(LSR) & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            outb(COM1, byte);
        }
    }

    /// Returns a received byte if one is waiting.
    pub fn read_byte(&mut self) -> Option<u8> {
        // SAFETY: COM1 is hv-core's own UART, programmed by `init`.
        unsafe { receive(COM1) }
    }
}

/// The second 16550 UART (COM2, 0x2f8): the management UART, a byte pipe
/// lent to the `DOMAIN_BUILD` holder (SPEC.md TS-13). Never blocks.
pub struct MgmtUart {
    _private: (),
}

const COM2: u16 = 0x2f8;
const COM2_LSR: u16 = COM2 + 5;
const COM2_SCRATCH: u16 = COM2 + 7;

impl MgmtUart {
    /// Programs COM2 if a UART answers there (its scratch register keeps a
    /// value); `None` otherwise.
    pub fn probe() -> Option<MgmtUart> {
        // SAFETY: probing the scratch register of the standard COM2 address,
        // which no one else drives (hv-core's console is COM1); an absent port
        // reads back 0xff.
        let present = unsafe {
            outb(COM2_SCRATCH, 0x5a);
            let a = inb(COM2_SCRATCH);
            outb(COM2_SCRATCH, 0xa5);
            let b = inb(COM2_SCRATCH);
            a == 0x5a && b == 0xa5
        };
        if !present {
            return None;
        }
        // SAFETY: COM2 answered and no one else drives it.
        unsafe { program_16550(COM2) };
        Some(MgmtUart { _private: () })
    }

    /// Sends bytes while the transmitter has room (16 at a time into an
    /// empty FIFO); returns how many it took.
    pub fn write_some(&mut self, bytes: &[u8]) -> usize {
        let mut done = 0;
        for chunk in bytes.chunks(16) {
            // SAFETY: reading LSR and writing THR of the management UART; an
            // empty transmit FIFO holds 16 bytes.
            unsafe {
                if inb(COM2_LSR) & LSR_THR_EMPTY == 0 {
                    break;
                }
                for &b in chunk {
                    outb(COM2, b);
                }
            }
            done += chunk.len();
        }
        done
    }

    /// Returns a received byte if one is waiting.
    pub fn read_byte(&mut self) -> Option<u8> {
        // SAFETY: COM2 is the management UART, programmed by `probe`.
        unsafe { receive(COM2) }
    }
}
