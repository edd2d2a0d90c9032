//! The 16550 UART at COM1 (0x3f8): hv-core's console, polled, 115200 8N1.

use super::cpu::{inb, outb};

const COM1: u16 = 0x3f8;
const LSR: u16 = COM1 + 5;
const LSR_DATA_READY: u8 = 1 << 0;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// COM1, owned by hv-core's console (see `crate::console`).
pub struct Serial {
    _private: (),
}

impl Serial {
    /// Programs COM1 and returns the handle. Call once, at boot.
    pub fn init() -> Serial {
        // SAFETY: COM1 is hv-core's own device; this is the standard 16550 set-up
        // sequence (interrupts off, DLAB for divisor 1, 8N1, FIFOs on).
        unsafe {
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x80);
            outb(COM1, 0x01);
            outb(COM1 + 1, 0x00);
            outb(COM1 + 3, 0x03);
            outb(COM1 + 2, 0xc7);
            outb(COM1 + 4, 0x03);
        }
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
        // SAFETY: reading LSR and RBR of our own UART.
        unsafe {
            if inb(LSR) & LSR_DATA_READY != 0 {
                Some(inb(COM1))
            } else {
                None
            }
        }
    }
}
