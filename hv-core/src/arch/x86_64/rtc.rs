//! The CMOS real-time clock, read once at boot for the wallclock.

use super::cpu::{inb, outb};

fn read(reg: u8) -> u8 {
    // SAFETY: CMOS index/data ports 0x70/0x71 belong to hv-core; bit 7 of the
    // index keeps NMIs enabled as they were (hv-core never disables them).
    unsafe {
        outb(0x70, reg);
        inb(0x71)
    }
}

/// The RTC's date and time as `(year, month, day, hour, minute, second)`.
pub fn read_datetime() -> (i64, u32, u32, u32, u32, u32) {
    // Wait out an update in progress.
    let mut spins = 0;
    while read(0x0a) & 0x80 != 0 && spins < 1_000_000 {
        spins += 1;
    }
    let status_b = read(0x0b);
    let bcd = status_b & 0x04 == 0;
    let conv = |v: u8| {
        if bcd {
            u32::from((v & 0x0f) + (v >> 4) * 10)
        } else {
            u32::from(v)
        }
    };
    let second = conv(read(0x00));
    let minute = conv(read(0x02));
    let hour_raw = read(0x04);
    let mut hour = conv(hour_raw & 0x7f);
    if status_b & 0x02 == 0 && hour_raw & 0x80 != 0 {
        hour = (hour % 12) + 12;
    }
    let day = conv(read(0x07));
    let month = conv(read(0x08));
    let year = 2000 + i64::from(conv(read(0x09)));
    (year, month, day, hour, minute, second)
}
