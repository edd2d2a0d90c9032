//! NVMe commands and completions (NVMe 1.4 §4.2, §4.6, §5, §6): the 64-byte
//! submission entry as sixteen dwords, with builders for the admin and I/O
//! commands the driver uses.

/// Admin opcode: create I/O submission queue.
pub const ADMIN_CREATE_SQ: u8 = 0x01;
/// Admin opcode: create I/O completion queue.
pub const ADMIN_CREATE_CQ: u8 = 0x05;
/// Admin opcode: identify.
pub const ADMIN_IDENTIFY: u8 = 0x06;
/// Admin opcode: set features.
pub const ADMIN_SET_FEATURES: u8 = 0x09;
/// I/O opcode: flush.
pub const IO_FLUSH: u8 = 0x00;
/// I/O opcode: write.
pub const IO_WRITE: u8 = 0x01;
/// I/O opcode: read.
pub const IO_READ: u8 = 0x02;
/// Identify CNS: namespace.
pub const CNS_NAMESPACE: u32 = 0;
/// Identify CNS: controller.
pub const CNS_CONTROLLER: u32 = 1;
/// Feature id: number of queues.
pub const FEATURE_NUM_QUEUES: u32 = 0x07;

/// A submission queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command {
    /// CDW0 .. CDW15.
    pub dwords: [u32; 16],
}

impl Command {
    /// A command with `opcode` and everything else zero.
    pub fn new(opcode: u8) -> Command {
        let mut dwords = [0; 16];
        dwords[0] = u32::from(opcode);
        Command { dwords }
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.dwords[0] as u8
    }

    /// Sets the command id (CDW0 bits 31:16).
    pub fn set_cid(&mut self, cid: u16) {
        self.dwords[0] = (self.dwords[0] & 0xffff) | (u32::from(cid) << 16);
    }

    /// Sets the namespace id.
    pub fn nsid(mut self, nsid: u32) -> Command {
        self.dwords[1] = nsid;
        self
    }

    /// Sets the data pointer (PRP1, PRP2).
    pub fn prp(mut self, prp1: u64, prp2: u64) -> Command {
        self.dwords[6] = prp1 as u32;
        self.dwords[7] = (prp1 >> 32) as u32;
        self.dwords[8] = prp2 as u32;
        self.dwords[9] = (prp2 >> 32) as u32;
        self
    }

    /// Sets CDW10 .. CDW10+n.
    pub fn cdw(mut self, first: usize, values: &[u32]) -> Command {
        for (i, v) in values.iter().enumerate() {
            self.dwords[10 + first + i] = *v;
        }
        self
    }

    /// Identify (`cns`) into the page at `page`.
    pub fn identify(cns: u32, nsid: u32, page: u64) -> Command {
        Command::new(ADMIN_IDENTIFY)
            .nsid(nsid)
            .prp(page, 0)
            .cdw(0, &[cns])
    }

    /// Create I/O completion queue `qid` of `size` entries at `addr`,
    /// physically contiguous, interrupting on MSI-X vector `vector` if any.
    pub fn create_cq(qid: u16, size: u16, addr: u64, vector: Option<u16>) -> Command {
        let irq = match vector {
            Some(v) => (u32::from(v) << 16) | 0b10,
            None => 0,
        };
        Command::new(ADMIN_CREATE_CQ)
            .prp(addr, 0)
            .cdw(0, &[(u32::from(size - 1) << 16) | u32::from(qid), irq | 1])
    }

    /// Create I/O submission queue `qid` of `size` entries at `addr`,
    /// completing on `cqid`.
    pub fn create_sq(qid: u16, size: u16, addr: u64, cqid: u16) -> Command {
        Command::new(ADMIN_CREATE_SQ).prp(addr, 0).cdw(
            0,
            &[
                (u32::from(size - 1) << 16) | u32::from(qid),
                (u32::from(cqid) << 16) | 1,
            ],
        )
    }

    /// Set features: ask for `n` I/O submission and completion queues.
    pub fn set_num_queues(n: u16) -> Command {
        let n = u32::from(n.max(1) - 1);
        Command::new(ADMIN_SET_FEATURES).cdw(0, &[FEATURE_NUM_QUEUES, n | (n << 16)])
    }

    /// Read or write `blocks` (≥ 1) logical blocks from `lba`.
    pub fn rw(opcode: u8, nsid: u32, lba: u64, blocks: u16, prp1: u64, prp2: u64) -> Command {
        Command::new(opcode)
            .nsid(nsid)
            .prp(prp1, prp2)
            .cdw(0, &[lba as u32, (lba >> 32) as u32, u32::from(blocks - 1)])
    }
}

/// A completion queue entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Completion {
    /// DW0: command-specific result.
    pub result: u32,
    /// Where the controller's submission head is.
    pub sq_head: u16,
    /// The submission queue of the command.
    pub sq_id: u16,
    /// The command id.
    pub cid: u16,
    /// Status field without the phase tag: status code in bits 7:0, status
    /// code type in 10:8.
    pub status: u16,
}

impl Completion {
    /// Whether the command succeeded.
    pub fn ok(&self) -> bool {
        self.status & 0x7ff == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        let mut c = Command::rw(IO_READ, 1, 0x1_0000_0002, 8, 0x5000, 0x6000);
        c.set_cid(0x33);
        assert_eq!(c.dwords[0], 0x0033_0002);
        assert_eq!(c.dwords[1], 1);
        assert_eq!((c.dwords[6], c.dwords[8]), (0x5000, 0x6000));
        assert_eq!((c.dwords[10], c.dwords[11], c.dwords[12]), (2, 1, 7));
        let cq = Command::create_cq(1, 64, 0x7000, Some(3));
        assert_eq!((cq.dwords[10], cq.dwords[11]), (0x003f_0001, 0x0003_0003));
        assert_eq!(Command::create_cq(1, 64, 0x7000, None).dwords[11], 1);
        let sq = Command::create_sq(1, 64, 0x8000, 1);
        assert_eq!((sq.dwords[10], sq.dwords[11]), (0x003f_0001, 0x0001_0001));
        assert_eq!(Command::set_num_queues(1).dwords[11], 0);
        assert!(
            Completion {
                result: 0,
                sq_head: 0,
                sq_id: 0,
                cid: 0,
                status: 0x800
            }
            .ok(),
            "DNR/More bits only"
        );
        assert!(!Completion {
            result: 0,
            sq_head: 0,
            sq_id: 0,
            cid: 0,
            status: 0x002
        }
        .ok());
    }
}
