//! `fsdemo`: a guest with a disk served by the driver domain (blkfront,
//! SPEC.md §13) and a FAT filesystem on it (the `embedded-sdmmc` crate,
//! which wants an MBR-partitioned disk: the driver domain's seed provides
//! one inside GPT partition 1 of its RAM disk).
//!
//! 1. Waits for its devbus record and connects.
//! 2. Queues 8 reads at once (asynchronous, many in flight), then reads the
//!    same 64 KiB with one indirect request, and compares.
//!    Then queues a flush and a read and sees them complete out of order.
//! 3. Mounts the FAT volume, prints `HELLO.TXT`, writes `NOTES.TXT`
//!    (12 KiB, several clusters), closes it and flushes the disk.
//! 4. Disconnects, reconnects (DEV-3 reset), mounts again and checks
//!    `NOTES.TXT` byte for byte.
//!
//! Prints `fsdemo: all checks passed` at the end; any failure panics.
//!
//! With `verify=1` (the second boot of the durability scenarios) it only
//! connects, mounts and checks that `NOTES.TXT`, written by an earlier
//! boot, is intact.
#![cfg_attr(target_os = "none", no_std, no_main)]
#![deny(unsafe_code)]

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use embedded_sdmmc::{Block, BlockCount, BlockDevice, BlockIdx, Mode, TimeSource, Timestamp};
use embedded_sdmmc::{VolumeIdx, VolumeManager};
use hypercall_abi::start_info::StartInfo;
use pv_guest_kit::bench::rdtsc;
use pv_guest_kit::devices::blkfront::{find_disk, BlkError, BlockFront, Op};
use pv_guest_kit::devices::devbus;
use pv_guest_kit::events;
use pv_guest_kit::println;

pv_guest_kit::entry!(kmain);

/// The blkfront as `embedded-sdmmc` wants a block device.
struct Disk(RefCell<BlockFront>);

impl BlockDevice for Disk {
    type Error = BlkError;

    fn read(&self, blocks: &mut [Block], start: BlockIdx) -> Result<(), BlkError> {
        let mut buf = vec![0u8; blocks.len() * 512];
        self.0.borrow_mut().read(u64::from(start.0), &mut buf)?;
        for (block, chunk) in blocks.iter_mut().zip(buf.chunks(512)) {
            block.contents.copy_from_slice(chunk);
        }
        Ok(())
    }

    fn write(&self, blocks: &[Block], start: BlockIdx) -> Result<(), BlkError> {
        let mut buf = Vec::with_capacity(blocks.len() * 512);
        for block in blocks {
            buf.extend_from_slice(&block.contents);
        }
        self.0.borrow_mut().write(u64::from(start.0), &buf)
    }

    fn num_blocks(&self) -> Result<BlockCount, BlkError> {
        let units = self.0.borrow().info().sectors;
        Ok(BlockCount(u32::try_from(units).unwrap_or(u32::MAX)))
    }
}

/// FAT timestamps: a fixed date (the guest has no need for the wallclock).
struct FixedClock;

impl TimeSource for FixedClock {
    fn get_timestamp(&self) -> Timestamp {
        Timestamp {
            year_since_1970: 56,
            zero_indexed_month: 10,
            zero_indexed_day: 21,
            hours: 6,
            minutes: 0,
            seconds: 0,
        }
    }
}

/// The text `NOTES.TXT` gets: 12 KiB of numbered lines.
fn notes() -> Vec<u8> {
    let mut text = Vec::new();
    let mut line = 0u32;
    while text.len() < 12 * 1024 {
        let s = alloc::format!("fsdemo note {line:05}: written through blkfront\n");
        text.extend_from_slice(s.as_bytes());
        line += 1;
    }
    text.truncate(12 * 1024);
    text
}

/// Median of `runs` timings of `f`, in TSC cycles.
fn median_cycles(runs: usize, mut f: impl FnMut()) -> u64 {
    let mut t: Vec<u64> = (0..runs)
        .map(|_| {
            let start = rdtsc();
            f();
            rdtsc() - start
        })
        .collect();
    t.sort_unstable();
    t[t.len() / 2]
}

/// Read latency and throughput through blkfront (TSC cycles: instruction
/// counts under `-icount`, emulation time under plain TCG). The driver
/// domain prints its local read of 1 MiB from the RAM disk in the same boot.
fn measure(front: &mut BlockFront) {
    let mut buf = vec![0u8; 1 << 20];
    let small = median_cycles(33, || {
        front
            .read(8, &mut buf[..4096])
            .unwrap_or_else(|e| panic!("fsdemo: read: {e}"));
    });
    let big = median_cycles(5, || {
        front
            .read(0, &mut buf)
            .unwrap_or_else(|e| panic!("fsdemo: read: {e}"));
    });
    println!("BENCH name=blkfront_read_4k_cycles value={small} (median of 33, one request)");
    println!(
        "BENCH name=blkfront_read_1m_cycles value={big} (median of 5, one indirect request of 256 segments)"
    );
}

fn kmain(si: &'static StartInfo) {
    if let Err(e) = devbus::watch() {
        panic!("fsdemo: VIRQ_DEVBUS: {e}");
    }
    // 1. The record, once the toolstack created it.
    let mut record = None;
    events::wait_until(|| {
        record = find_disk(si.domid).unwrap_or_else(|e| panic!("fsdemo: devbus: {e}"));
        record.is_some()
    });
    let Some(record) = record else { return };
    let mut front =
        BlockFront::connect(record.id).unwrap_or_else(|e| panic!("fsdemo: connect: {e}"));
    if pv_guest_kit::cmdline::Args::new(si.cmdline_str()).get_u64("verify") == Some(1) {
        let front = check_notes(front, &notes());
        front
            .disconnect()
            .unwrap_or_else(|e| panic!("fsdemo: disconnect: {e}"));
        println!("fsdemo: NOTES.TXT from the previous boot is intact");
        return;
    }
    let info = front.info();
    println!(
        "fsdemo: disk connected: {} units of 512 bytes, ring of {} slots, features {:#x}, up to {} KiB per request",
        info.sectors,
        front.ring_size(),
        info.features,
        front.max_transfer() / 1024
    );

    // 2. Eight reads in flight at once, then one indirect read of the same range.
    let ids: Vec<u64> = (0..8u64)
        .map(|i| {
            front
                .submit(Op::Read {
                    sector: i * 16,
                    units: 16,
                })
                .unwrap_or_else(|e| panic!("fsdemo: submit: {e}"))
        })
        .collect();
    let in_flight = front.in_flight();
    let mut pieces = Vec::new();
    // Wait in reverse order: completions are matched by id, not position.
    for &id in ids.iter().rev() {
        let c = front
            .wait(id)
            .unwrap_or_else(|e| panic!("fsdemo: wait: {e}"));
        assert_eq!(c.status, 0, "fsdemo: read {id} failed");
        pieces.push(c.data.unwrap_or_default());
    }
    pieces.reverse();
    let queued: Vec<u8> = pieces.concat();
    let mut whole = vec![0u8; 64 * 1024];
    front
        .read(0, &mut whole)
        .unwrap_or_else(|e| panic!("fsdemo: indirect read: {e}"));
    assert!(queued == whole, "fsdemo: queued and indirect reads differ");
    assert_eq!(
        &whole[510..512],
        &[0x55, 0xaa],
        "fsdemo: no MBR on the disk"
    );
    println!("fsdemo: {in_flight} reads were in flight at once; 64 KiB indirect read matches them");

    // Out-of-order completion (BLK-7): a flush queued before a read is
    // answered after it. The flush follows a write (the 64 KiB just read,
    // written back unchanged): a RAM-disk backend defers flushes to the end
    // of a batch, a real-disk backend sends the flush to the device only
    // once the write finished, while the read goes at once.
    let write = front
        .submit(Op::Write {
            sector: 0,
            data: whole.clone(),
        })
        .unwrap_or_else(|e| panic!("fsdemo: submit write: {e}"));
    let flush = front
        .submit(Op::Flush)
        .unwrap_or_else(|e| panic!("fsdemo: submit flush: {e}"));
    let read = front
        .submit(Op::Read {
            sector: 0,
            units: 8,
        })
        .unwrap_or_else(|e| panic!("fsdemo: submit read: {e}"));
    let write_done = front
        .wait(write)
        .unwrap_or_else(|e| panic!("fsdemo: wait: {e}"));
    assert_eq!(write_done.status, 0, "fsdemo: write-back failed");
    let read_done = front
        .wait(read)
        .unwrap_or_else(|e| panic!("fsdemo: wait: {e}"));
    let flush_done = front
        .wait(flush)
        .unwrap_or_else(|e| panic!("fsdemo: wait: {e}"));
    assert_eq!((read_done.status, flush_done.status), (0, 0));
    assert!(
        read_done.seq < flush_done.seq,
        "fsdemo: the flush completed before the read queued after it"
    );
    println!("fsdemo: a flush queued before a read completed after it (out of order)");
    measure(&mut front);

    // 3. The filesystem.
    let text = notes();
    let disk = Disk(RefCell::new(front));
    let mgr = VolumeManager::new(disk, FixedClock);
    {
        let volume = mgr
            .open_volume(VolumeIdx(0))
            .unwrap_or_else(|e| panic!("fsdemo: mount: {e:?}"));
        let root = volume
            .open_root_dir()
            .unwrap_or_else(|e| panic!("fsdemo: root: {e:?}"));
        let hello = root
            .open_file_in_dir("HELLO.TXT", Mode::ReadOnly)
            .unwrap_or_else(|e| panic!("fsdemo: HELLO.TXT: {e:?}"));
        let mut buf = [0u8; 256];
        let n = hello
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("fsdemo: reading HELLO.TXT: {e:?}"));
        let line = core::str::from_utf8(&buf[..n]).unwrap_or("<not UTF-8>");
        println!("fsdemo: HELLO.TXT says: {}", line.trim_end());
        hello
            .close()
            .unwrap_or_else(|e| panic!("fsdemo: close: {e:?}"));
        let notes_file = root
            .open_file_in_dir("NOTES.TXT", Mode::ReadWriteCreateOrTruncate)
            .unwrap_or_else(|e| panic!("fsdemo: creating NOTES.TXT: {e:?}"));
        notes_file
            .write(&text)
            .unwrap_or_else(|e| panic!("fsdemo: writing NOTES.TXT: {e:?}"));
        notes_file
            .close()
            .unwrap_or_else(|e| panic!("fsdemo: closing NOTES.TXT: {e:?}"));
        root.close().unwrap_or_else(|e| panic!("fsdemo: {e:?}"));
        volume.close().unwrap_or_else(|e| panic!("fsdemo: {e:?}"));
    }
    let (disk, _) = mgr.free();
    let mut front = disk.0.into_inner();
    front
        .flush()
        .unwrap_or_else(|e| panic!("fsdemo: flush: {e}"));
    println!(
        "fsdemo: wrote NOTES.TXT ({} bytes) and flushed the disk",
        text.len()
    );

    // 4. Reconnect and read it back.
    let id = front.record();
    front
        .disconnect()
        .unwrap_or_else(|e| panic!("fsdemo: disconnect: {e}"));
    let front = BlockFront::connect(id).unwrap_or_else(|e| panic!("fsdemo: reconnect: {e}"));
    println!("fsdemo: reconnected to record {id}");
    let front = check_notes(front, &text);
    assert_eq!(front.leaked_grants(), 0, "fsdemo: grants leaked");
    front
        .disconnect()
        .unwrap_or_else(|e| panic!("fsdemo: disconnect: {e}"));
    println!("fsdemo: NOTES.TXT read back intact after reconnecting; all checks passed");
}

/// Mounts the volume on `front` and checks `NOTES.TXT` is `text`, byte for
/// byte (panics otherwise); gives the connection back.
fn check_notes(front: BlockFront, text: &[u8]) -> BlockFront {
    let mgr = VolumeManager::new(Disk(RefCell::new(front)), FixedClock);
    {
        let volume = mgr
            .open_volume(VolumeIdx(0))
            .unwrap_or_else(|e| panic!("fsdemo: remount: {e:?}"));
        let root = volume
            .open_root_dir()
            .unwrap_or_else(|e| panic!("fsdemo: root: {e:?}"));
        let f = root
            .open_file_in_dir("NOTES.TXT", Mode::ReadOnly)
            .unwrap_or_else(|e| panic!("fsdemo: NOTES.TXT after reconnect: {e:?}"));
        let mut back = vec![0u8; text.len() + 100];
        let mut got = 0;
        loop {
            let n = f
                .read(&mut back[got..])
                .unwrap_or_else(|e| panic!("fsdemo: reading NOTES.TXT: {e:?}"));
            if n == 0 {
                break;
            }
            got += n;
        }
        assert_eq!(got, text.len(), "fsdemo: NOTES.TXT has the wrong size");
        assert!(back[..got] == *text, "fsdemo: NOTES.TXT differs");
        f.close().unwrap_or_else(|e| panic!("fsdemo: {e:?}"));
        root.close().unwrap_or_else(|e| panic!("fsdemo: {e:?}"));
        volume.close().unwrap_or_else(|e| panic!("fsdemo: {e:?}"));
    }
    let (disk, _) = mgr.free();
    disk.0.into_inner()
}
