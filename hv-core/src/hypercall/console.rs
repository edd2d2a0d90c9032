//! `console_io` (HC-11): guest console output, line-buffered per domain and
//! kept in its console ring (TS-10); console input — the serial console for
//! domains holding `CONSOLE_READ`, the domain's own queue (TS-11) for others.

use hypercall_abi::console::{CONSOLE_IO_MAX, CONSOLE_READ, CONSOLE_WRITE};
use hypercall_abi::start_info::Capabilities;
use hypercall_abi::Errno;

use crate::domain::DOMAINS;
use crate::guest_memory::{copy_from_guest, copy_to_guest, GuestRange};
use crate::sched;

const CHUNK: usize = 256;

pub fn console_io(cmd: u64, len: u64, buf: u64) -> Result<u64, Errno> {
    if len > CONSOLE_IO_MAX {
        return Err(Errno::E2BIG);
    }
    let range = GuestRange::new(buf, len)?;
    let id = sched::current().ok_or(Errno::EINVAL)?;
    match cmd {
        CONSOLE_WRITE => {
            let mut chunk = [0u8; CHUNK];
            let mut done = 0u64;
            while done < len {
                let n = (len - done).min(CHUNK as u64);
                let part = GuestRange::new(range.va() + done, n)?;
                let dst = &mut chunk[..n as usize];
                copy_from_guest(dst, part)?;
                let mut table = DOMAINS.lock();
                let domain = table.domains.get_mut(&id.domid).ok_or(Errno::ESRCH)?;
                let domid = domain.id;
                if domain.first_output_tsc == 0 {
                    domain.first_output_tsc = crate::arch::cpu::rdtsc();
                }
                domain.console_ring.write(dst);
                domain
                    .console
                    .feed(dst, |line| crate::console::emit_guest_line(domid, line));
                done += n;
            }
            // Tell the toolstack (TS-10); a no-op unless it bound the VIRQ.
            if id.domid != hypercall_abi::DOMID_DRIVER && len > 0 {
                crate::event::delivery::send_virq(
                    hypercall_abi::DOMID_DRIVER,
                    hypercall_abi::evtchn::VIRQ_GUEST_CONSOLE,
                );
            }
            Ok(len)
        }
        CONSOLE_READ => {
            let want = len.min(CHUNK as u64) as usize;
            let mut bytes = [0u8; CHUNK];
            let mut n = 0usize;
            let serial = {
                let mut table = DOMAINS.lock();
                let domain = table.domains.get_mut(&id.domid).ok_or(Errno::ESRCH)?;
                let serial = domain.capabilities.contains(Capabilities::CONSOLE_READ);
                if !serial {
                    // Its own queue, filled by the toolstack (TS-11).
                    while n < want {
                        match domain.console_input.pop_front() {
                            Some(b) => {
                                bytes[n] = b;
                                n += 1;
                            }
                            None => break,
                        }
                    }
                }
                serial
            };
            while serial && n < want {
                match crate::console::read_byte() {
                    Some(b) => {
                        bytes[n] = b;
                        n += 1;
                    }
                    None => break,
                }
            }
            copy_to_guest(GuestRange::new(buf, n as u64)?, &bytes[..n])?;
            Ok(n as u64)
        }
        _ => Err(Errno::EINVAL),
    }
}
