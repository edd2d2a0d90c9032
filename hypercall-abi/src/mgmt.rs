//! The management protocol (SPEC.md §17, MGMT-*): what `pvctl` on the host
//! and the driver domain's toolstack say to each other over the management
//! UART (COM2), which QEMU exposes as a unix socket.
//!
//! This module owns the wire format and nothing else — pure, allocation-free
//! encoding and decoding that both ends link:
//!
//! - [`FrameHeader`]: 24 bytes of magic, version, kind, sequence number,
//!   payload length, payload CRC and header CRC (MGMT-1);
//! - [`encode_frame`]: one frame into a caller's buffer;
//! - [`Decoder`]: a byte-stream reassembler that finds frames in a stream
//!   with garbage, lost bytes or a half-sent frame in it and resynchronises
//!   on the next good header (MGMT-2);
//! - the payload structs of every message (MGMT-3) and [`CreateRequest`],
//!   the one variable-length request;
//! - [`crc32`] and [`sha256`] (image digests for the content-addressed cache,
//!   MGMT-4).
//!
//! Every payload struct is `#[repr(C)]`, little-endian, with explicit pads
//! and compile-time size assertions, like every other ABI struct.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `FrameHeader.magic`: the bytes `PVMG`.
pub const MGMT_MAGIC: u32 = u32::from_le_bytes(*b"PVMG");
/// The protocol version this module speaks (MGMT-1).
pub const MGMT_VERSION: u16 = 1;
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 8192;
/// Largest frame.
pub const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD;
/// Size of [`FrameHeader`].
pub const HEADER_LEN: usize = 24;
/// Image bytes per `IMAGE_PUT` frame that `pvctl` sends (a frame stays
/// below the hypervisor's 4 KiB management receive buffer, TS-13).
pub const IMAGE_CHUNK: usize = 2048;
/// Largest image (the hypervisor's `BUILD_IMAGE_MAX`); a driver domain may
/// hold less.
pub const MAX_IMAGE: u64 = 4 << 20;
/// Most disks / NICs of one domain.
pub const MAX_DISKS: usize = 4;
/// Most NICs of one domain.
pub const MAX_NICS: usize = 4;
/// Longest guest command line.
pub const MAX_CMDLINE: usize = 1024;

/// Reply kind of request kind `k`.
pub const fn reply_kind(k: u16) -> u16 {
    k | REPLY
}
/// Bit set in every reply kind.
pub const REPLY: u16 = 0x80;

/// `HELLO` [`Hello`] → [`HelloReply`].
pub const KIND_HELLO: u16 = 1;
/// `INFO` (empty) → [`InfoReply`].
pub const KIND_INFO: u16 = 2;
/// `LIST` (empty) → [`ListHeader`] + `count` × [`DomainEntry`].
pub const KIND_LIST: u16 = 3;
/// `IMAGE_QUERY` [`ImageRef`] → [`ImageStatus`].
pub const KIND_IMAGE_QUERY: u16 = 4;
/// `IMAGE_PUT` [`ImageRef`] + bytes at `offset` → [`ImageStatus`].
pub const KIND_IMAGE_PUT: u16 = 5;
/// `CREATE` [`CreateRequest`] → [`Created`].
pub const KIND_CREATE: u16 = 6;
/// `DESTROY` [`DomRef`] → empty.
pub const KIND_DESTROY: u16 = 7;
/// `SHUTDOWN` [`DomRef`] → empty.
pub const KIND_SHUTDOWN: u16 = 8;
/// `PAUSE` [`DomRef`] → empty.
pub const KIND_PAUSE: u16 = 9;
/// `UNPAUSE` [`DomRef`] → empty.
pub const KIND_UNPAUSE: u16 = 10;
/// `CONSOLE_READ` [`ConsoleRead`] → [`ConsoleData`] + bytes.
pub const KIND_CONSOLE_READ: u16 = 11;
/// `CONSOLE_WRITE` [`DomRef`] + bytes → [`Count`].
pub const KIND_CONSOLE_WRITE: u16 = 12;
/// `DMESG` [`ConsoleRead`] (domid ignored) → [`ConsoleData`] + bytes.
pub const KIND_DMESG: u16 = 13;
/// `POWEROFF` (empty) → empty, then the driver domain powers the machine off.
pub const KIND_POWEROFF: u16 = 14;
/// `BENCH_REPORT` (empty) → [`Count`]: the driver domain prints its
/// create-time figures as `BENCH` lines on its console.
pub const KIND_BENCH_REPORT: u16 = 15;
/// Reply to any request that failed: [`ErrorReply`] + one line of UTF-8.
pub const KIND_ERROR: u16 = 0xff;

/// The name of a request kind (replies: with [`REPLY`] cleared), for logs.
pub const fn kind_name(kind: u16) -> &'static str {
    match kind & !REPLY {
        KIND_HELLO => "HELLO",
        KIND_INFO => "INFO",
        KIND_LIST => "LIST",
        KIND_IMAGE_QUERY => "IMAGE_QUERY",
        KIND_IMAGE_PUT => "IMAGE_PUT",
        KIND_CREATE => "CREATE",
        KIND_DESTROY => "DESTROY",
        KIND_SHUTDOWN => "SHUTDOWN",
        KIND_PAUSE => "PAUSE",
        KIND_UNPAUSE => "UNPAUSE",
        KIND_CONSOLE_READ => "CONSOLE_READ",
        KIND_CONSOLE_WRITE => "CONSOLE_WRITE",
        KIND_DMESG => "DMESG",
        KIND_POWEROFF => "POWEROFF",
        KIND_BENCH_REPORT => "BENCH_REPORT",
        _ if kind == KIND_ERROR => "ERROR",
        _ => "unknown",
    }
}

/// The 24-byte header in front of every frame (MGMT-1).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct FrameHeader {
    /// [`MGMT_MAGIC`].
    pub magic: u32,
    /// Protocol version of the sender.
    pub version: u16,
    /// `KIND_*`; replies have [`REPLY`] set.
    pub kind: u16,
    /// Chosen by the client; a reply carries its request's.
    pub seq: u32,
    /// Payload bytes after the header, at most [`MAX_PAYLOAD`].
    pub len: u32,
    /// [`crc32`] of the payload.
    pub payload_crc: u32,
    /// [`crc32`] of the 20 bytes before this field.
    pub header_crc: u32,
}
const _: () = assert!(core::mem::size_of::<FrameHeader>() == HEADER_LEN);
const _: () = assert!(core::mem::offset_of!(FrameHeader, header_crc) == 20);

/// Why [`encode_frame`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The payload is longer than [`MAX_PAYLOAD`].
    TooLong,
    /// The output buffer is too small.
    NoRoom,
}

/// Writes one frame whose payload is the concatenation of `parts` into `out`;
/// returns its length.
pub fn encode_frame(
    kind: u16,
    seq: u32,
    parts: &[&[u8]],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_PAYLOAD {
        return Err(EncodeError::TooLong);
    }
    let total = HEADER_LEN + len;
    if out.len() < total {
        return Err(EncodeError::NoRoom);
    }
    let mut at = HEADER_LEN;
    let mut crc = Crc32::new();
    for part in parts {
        out[at..at + part.len()].copy_from_slice(part);
        crc.update(part);
        at += part.len();
    }
    let mut header = FrameHeader {
        magic: MGMT_MAGIC,
        version: MGMT_VERSION,
        kind,
        seq,
        len: len as u32,
        payload_crc: crc.finish(),
        header_crc: 0,
    };
    header.header_crc = crc32(&header.as_bytes()[..20]);
    out[..HEADER_LEN].copy_from_slice(header.as_bytes());
    Ok(total)
}

/// Reassembles frames from a byte stream (MGMT-2).
///
/// Bytes go in with [`Decoder::push`], which stops taking them once a whole,
/// checked frame is buffered; [`Decoder::frame`] shows it until
/// [`Decoder::pop`]. Anything that is not a frame — noise, a frame whose
/// header or payload CRC fails, the tail of a frame whose start was lost — is
/// skipped byte by byte until a header checks again; [`Decoder::reset`]
/// drops a partial frame (the server calls it when the line went quiet
/// mid-frame, e.g. the client disconnected).
///
/// Frames of any version are delivered: the header layout is fixed across
/// versions, and the receiver answers a version it does not speak.
#[derive(Clone)]
pub struct Decoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    ready: bool,
    skipped: u64,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Decoder")
            .field("len", &self.len)
            .field("ready", &self.ready)
            .field("skipped", &self.skipped)
            .finish()
    }
}

impl Decoder {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            ready: false,
            skipped: 0,
        }
    }

    /// Takes bytes from `input` until a frame is complete (or `input` is used
    /// up); returns how many it took. Takes nothing while a frame is waiting
    /// to be popped.
    pub fn push(&mut self, input: &[u8]) -> usize {
        let mut taken = 0;
        while !self.ready && taken < input.len() {
            let want = self.wanted();
            let n = want.min(input.len() - taken);
            self.buf[self.len..self.len + n].copy_from_slice(&input[taken..taken + n]);
            self.len += n;
            taken += n;
            self.settle();
        }
        taken
    }

    /// Bytes needed before the buffered prefix can be judged further.
    fn wanted(&self) -> usize {
        if self.len < HEADER_LEN {
            return HEADER_LEN - self.len;
        }
        let header = self.header();
        HEADER_LEN + header.len as usize - self.len
    }

    fn header(&self) -> FrameHeader {
        match FrameHeader::read_from_prefix(&self.buf[..self.len]) {
            Ok((h, _)) => h,
            Err(_) => FrameHeader::default(),
        }
    }

    /// Judges the buffer: drops bytes that cannot start a frame, marks a
    /// complete checked frame ready.
    fn settle(&mut self) {
        loop {
            // Align on a magic candidate.
            let magic = MGMT_MAGIC.to_le_bytes();
            let keep_from = (0..self.len)
                .find(|&i| {
                    let n = (self.len - i).min(4);
                    self.buf[i..i + n] == magic[..n]
                })
                .unwrap_or(self.len);
            if keep_from > 0 {
                self.drop_front(keep_from);
            }
            if self.len < HEADER_LEN {
                return;
            }
            let header = self.header();
            let header_ok =
                crc32(&self.buf[..20]) == header.header_crc && header.len as usize <= MAX_PAYLOAD;
            if !header_ok {
                self.drop_front(1);
                continue;
            }
            let total = HEADER_LEN + header.len as usize;
            if self.len < total {
                return;
            }
            if crc32(&self.buf[HEADER_LEN..total]) != header.payload_crc {
                self.drop_front(1);
                continue;
            }
            self.ready = true;
            return;
        }
    }

    fn drop_front(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
        self.skipped += n as u64;
    }

    /// The complete frame, if one is buffered.
    pub fn frame(&self) -> Option<(FrameHeader, &[u8])> {
        if !self.ready {
            return None;
        }
        let header = self.header();
        Some((
            header,
            &self.buf[HEADER_LEN..HEADER_LEN + header.len as usize],
        ))
    }

    /// Drops the complete frame.
    pub fn pop(&mut self) {
        if self.ready {
            let total = HEADER_LEN + self.header().len as usize;
            self.ready = false;
            // Bytes after the frame (read while a false header was being
            // judged) stay and are judged next.
            self.buf.copy_within(total..self.len, 0);
            self.len -= total;
            self.settle();
        }
    }

    /// Whether part of a frame is buffered (and no complete one).
    pub fn partial(&self) -> bool {
        !self.ready && self.len > 0
    }

    /// Drops a partial frame, counting its bytes as skipped.
    pub fn reset(&mut self) {
        if !self.ready {
            self.skipped += self.len as u64;
            self.len = 0;
        }
    }

    /// Bytes skipped so far while resynchronising.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Splits a `T` off the front of `payload`; `None` if it is too short.
pub fn split<T: FromBytes>(payload: &[u8]) -> Option<(T, &[u8])> {
    T::read_from_prefix(payload).ok()
}

/// Reads a payload that is exactly one `T`.
pub fn exact<T: FromBytes>(payload: &[u8]) -> Option<T> {
    match split::<T>(payload) {
        Some((value, [])) => Some(value),
        _ => None,
    }
}

/// `HELLO` request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Hello {
    /// The client's [`MGMT_VERSION`].
    pub protocol: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<Hello>() == 8);

/// `HELLO` reply.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct HelloReply {
    /// The server's [`MGMT_VERSION`].
    pub protocol: u32,
    /// The hypervisor's ABI version.
    pub abi_major: u16,
    /// The hypervisor's ABI version.
    pub abi_minor: u16,
    /// The serving domain.
    pub server_domid: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<HelloReply>() == 16);

/// `INFO` reply: the host as the hypervisor describes it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct InfoReply {
    /// ABI major version.
    pub abi_major: u32,
    /// ABI minor version.
    pub abi_minor: u32,
    /// Physical CPUs.
    pub nr_cpus: u32,
    /// `IOMMU_*`: 0 none, 1 VT-d, 2 AMD-Vi.
    pub iommu: u32,
    /// Pages of RAM the hypervisor manages.
    pub total_pages: u64,
    /// Pages free.
    pub free_pages: u64,
    /// TSC frequency.
    pub tsc_hz: u64,
    /// Live domains.
    pub nr_domains: u32,
    /// Zero.
    pub pad: u32,
    /// Hypervisor version, NUL-padded.
    pub hv_version: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<InfoReply>() == 80);
const _: () = assert!(core::mem::offset_of!(InfoReply, hv_version) == 48);

/// `InfoReply.iommu` carries `PhysInfo.iommu` (TS-9) as it is.
pub use crate::domctl::{IOMMU_AMDVI, IOMMU_NONE, IOMMU_VTD};

/// `LIST` reply head; `count` [`DomainEntry`]s follow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ListHeader {
    /// Entries that follow.
    pub count: u32,
    /// Zero.
    pub pad: u32,
    /// The driver domain's system time (ns) when it listed, for rates.
    pub now_ns: u64,
}
const _: () = assert!(core::mem::size_of::<ListHeader>() == 16);

/// `DomainEntry.state` (the hypervisor's, MGMT-3).
pub const STATE_RUNNING: u32 = 0;
/// Shut down by its own request.
pub const STATE_SHUTDOWN: u32 = 1;
/// Crashed.
pub const STATE_CRASHED: u32 = 2;
/// Paused by the toolstack.
pub const STATE_PAUSED: u32 = 3;

/// One domain of a `LIST` reply.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DomainEntry {
    /// Domain id.
    pub domid: u32,
    /// `STATE_*`.
    pub state: u32,
    /// vCPUs.
    pub nr_vcpus: u32,
    /// 1 if the toolstack created it (at run time), 0 for boot-time domains.
    pub managed: u32,
    /// Pages owned.
    pub nr_pages: u64,
    /// Memory limit in pages.
    pub max_pages: u64,
    /// Run time of all its vCPUs, ns.
    pub cpu_ns: u64,
    /// Event-channel ports in use.
    pub evtchn_ports: u32,
    /// Grant entries in use.
    pub grant_entries: u32,
    /// Console bytes it wrote so far.
    pub console_bytes: u64,
    /// Name, NUL-padded.
    pub name: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<DomainEntry>() == 88);
const _: () = assert!(core::mem::offset_of!(DomainEntry, name) == 56);

/// An image by content: its [`sha256`] and length; with `IMAGE_PUT`, the
/// bytes at `offset` follow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ImageRef {
    /// SHA-256 of the whole image.
    pub digest: [u8; 32],
    /// Length of the whole image.
    pub total_len: u64,
    /// Where the bytes of this frame go (`IMAGE_PUT`); 0 otherwise.
    pub offset: u64,
}
const _: () = assert!(core::mem::size_of::<ImageRef>() == 48);

/// Reply to `IMAGE_QUERY` and `IMAGE_PUT`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ImageStatus {
    /// Bytes held from the start (the next `IMAGE_PUT` offset).
    pub have: u64,
    /// 1 when the whole image is held and its digest checked.
    pub complete: u32,
    /// Images in the cache.
    pub cached_images: u32,
}
const _: () = assert!(core::mem::size_of::<ImageStatus>() == 16);

/// `DiskSpec.view`: the whole disk of the driver domain.
pub const VIEW_WHOLE: u32 = 0;
/// `DiskSpec.view`: GPT partition `first` (1-based).
pub const VIEW_GPT: u32 = 1;
/// `DiskSpec.view`: `count` 512-byte units from unit `first`.
pub const VIEW_LBA: u32 = 2;

/// One disk of a new domain: a view of the driver domain's disk.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DiskSpec {
    /// `VIEW_*`.
    pub view: u32,
    /// 1 for read-only.
    pub readonly: u32,
    /// GPT partition number or first unit.
    pub first: u64,
    /// Units (`VIEW_LBA`), else 0.
    pub count: u64,
}
const _: () = assert!(core::mem::size_of::<DiskSpec>() == 24);

/// One NIC of a new domain.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NicSpec {
    /// Unicast MAC; bytes 6..8 zero.
    pub mac: [u8; 8],
}
const _: () = assert!(core::mem::size_of::<NicSpec>() == 8);

/// Fixed part of `CREATE`; then `nr_disks` [`DiskSpec`], `nr_nics`
/// [`NicSpec`] and `cmdline_len` bytes of command line.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct CreateFixed {
    /// The image (sent before with `IMAGE_PUT`).
    pub image: [u8; 32],
    /// Memory in 4 KiB pages.
    pub max_pages: u64,
    /// vCPUs.
    pub vcpus: u32,
    /// Scheduler weight, 0 = default.
    pub weight: u32,
    /// CPU cap in percent, 0 = none.
    pub cap_percent: u32,
    /// Disks that follow.
    pub nr_disks: u16,
    /// NICs that follow.
    pub nr_nics: u16,
    /// Command-line bytes that follow.
    pub cmdline_len: u32,
    /// Zero.
    pub pad: u32,
    /// Name, NUL-padded.
    pub name: [u8; 32],
}
const _: () = assert!(core::mem::size_of::<CreateFixed>() == 96);
const _: () = assert!(core::mem::offset_of!(CreateFixed, name) == 64);

/// A parsed `CREATE` request, borrowing from the payload.
#[derive(Clone, Copy, Debug)]
pub struct CreateRequest<'a> {
    /// The fixed part.
    pub fixed: CreateFixed,
    /// Disk specs, raw (`nr_disks` × 24 bytes).
    disks: &'a [u8],
    /// NIC specs, raw.
    nics: &'a [u8],
    /// The command line.
    pub cmdline: &'a str,
}

/// Why a payload was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Too short, too long or counts that do not match.
    Length,
    /// Too many disks or NICs, or a command line too long.
    TooMany,
    /// A field that must be zero, or a name / command line that is not UTF-8.
    Field,
}

impl<'a> CreateRequest<'a> {
    /// Parses a `CREATE` payload.
    pub fn parse(payload: &'a [u8]) -> Result<Self, PayloadError> {
        let (fixed, rest) = split::<CreateFixed>(payload).ok_or(PayloadError::Length)?;
        let (nd, nn, nc) = (
            fixed.nr_disks as usize,
            fixed.nr_nics as usize,
            fixed.cmdline_len as usize,
        );
        if nd > MAX_DISKS || nn > MAX_NICS || nc > MAX_CMDLINE {
            return Err(PayloadError::TooMany);
        }
        let disk_bytes = nd * core::mem::size_of::<DiskSpec>();
        let nic_bytes = nn * core::mem::size_of::<NicSpec>();
        if rest.len() != disk_bytes + nic_bytes + nc {
            return Err(PayloadError::Length);
        }
        let (disks, rest) = rest.split_at(disk_bytes);
        let (nics, cmdline) = rest.split_at(nic_bytes);
        let cmdline = core::str::from_utf8(cmdline).map_err(|_| PayloadError::Field)?;
        if fixed.pad != 0 || name_str(&fixed.name).is_none() {
            return Err(PayloadError::Field);
        }
        Ok(Self {
            fixed,
            disks,
            nics,
            cmdline,
        })
    }

    /// Disk `i`.
    pub fn disk(&self, i: usize) -> Option<DiskSpec> {
        let size = core::mem::size_of::<DiskSpec>();
        let bytes = self.disks.get(i * size..(i + 1) * size)?;
        DiskSpec::read_from_bytes(bytes).ok()
    }

    /// Number of disks.
    pub fn nr_disks(&self) -> usize {
        self.disks.len() / core::mem::size_of::<DiskSpec>()
    }

    /// NIC `i`.
    pub fn nic(&self, i: usize) -> Option<NicSpec> {
        let size = core::mem::size_of::<NicSpec>();
        let bytes = self.nics.get(i * size..(i + 1) * size)?;
        NicSpec::read_from_bytes(bytes).ok()
    }

    /// Number of NICs.
    pub fn nr_nics(&self) -> usize {
        self.nics.len() / core::mem::size_of::<NicSpec>()
    }
}

/// The text of a NUL-padded name field: `None` unless UTF-8 up to the first
/// NUL with only NULs after it.
pub fn name_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    if field[end..].iter().any(|&b| b != 0) {
        return None;
    }
    core::str::from_utf8(&field[..end]).ok()
}

/// `name` NUL-padded into a 32-byte field; `None` if longer than 31 bytes.
pub fn name_field(name: &str) -> Option<[u8; 32]> {
    let mut field = [0u8; 32];
    if name.len() > 31 {
        return None;
    }
    field[..name.len()].copy_from_slice(name.as_bytes());
    Some(field)
}

/// `CREATE` reply.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Created {
    /// The new domain.
    pub domid: u32,
    /// Disk and NIC records made for it.
    pub records: u32,
    /// Time the toolstack spent, hypervisor calls excluded, ns.
    pub toolstack_ns: u64,
    /// Time spent inside the domain-building hypercalls, ns.
    pub hypervisor_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Created>() == 24);

/// A request naming one domain.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct DomRef {
    /// The domain.
    pub domid: u32,
    /// Zero.
    pub pad: u32,
}
const _: () = assert!(core::mem::size_of::<DomRef>() == 8);

/// `CONSOLE_READ` / `DMESG` request.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ConsoleRead {
    /// The domain (ignored by `DMESG`).
    pub domid: u32,
    /// Most bytes wanted (the server may send fewer).
    pub max: u32,
    /// Stream position to read from.
    pub offset: u64,
}
const _: () = assert!(core::mem::size_of::<ConsoleRead>() == 16);

/// `CONSOLE_READ` / `DMESG` reply; `len` bytes follow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ConsoleData {
    /// Stream position of the first byte sent (> the asked offset when
    /// bytes were lost).
    pub start: u64,
    /// Stream end when read.
    pub end: u64,
    /// Bytes that follow.
    pub len: u32,
    /// 1 when the domain is gone (its log is all there will be).
    pub ended: u32,
}
const _: () = assert!(core::mem::size_of::<ConsoleData>() == 24);

/// A count (`CONSOLE_WRITE`: bytes queued; `BENCH_REPORT`: lines printed).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct Count {
    /// The count.
    pub count: u64,
}
const _: () = assert!(core::mem::size_of::<Count>() == 8);

/// `ERROR` reply head; `len` bytes of one UTF-8 line follow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct ErrorReply {
    /// The errno behind it (positive), 0 if none.
    pub errno: u32,
    /// Bytes of message.
    pub len: u32,
}
const _: () = assert!(core::mem::size_of::<ErrorReply>() == 8);

/// CRC-32 (IEEE 802.3, reflected, as zlib), table-driven.
#[derive(Clone, Copy, Debug)]
pub struct Crc32(u32);

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

impl Default for Crc32 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32 {
    /// A fresh CRC.
    pub const fn new() -> Self {
        Self(0xffff_ffff)
    }
    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = CRC_TABLE[((self.0 ^ u32::from(b)) & 0xff) as usize] ^ (self.0 >> 8);
        }
    }
    /// The CRC of everything added.
    pub fn finish(self) -> u32 {
        !self.0
    }
}

/// CRC-32 of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut c = Crc32::new();
    c.update(bytes);
    c.finish()
}

/// SHA-256 (FIPS 180-4), streaming.
#[derive(Clone, Debug)]
pub struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    block_len: usize,
    total: u64,
}

const SHA_K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Default for Sha256 {
    fn default() -> Self {
        Self::new()
    }
}

impl Sha256 {
    /// A fresh hash.
    pub const fn new() -> Self {
        Self {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            block_len: 0,
            total: 0,
        }
    }

    fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, word) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = *state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(SHA_K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }

    /// Adds bytes.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.total = self.total.wrapping_add(bytes.len() as u64);
        while !bytes.is_empty() {
            let n = (64 - self.block_len).min(bytes.len());
            self.block[self.block_len..self.block_len + n].copy_from_slice(&bytes[..n]);
            self.block_len += n;
            bytes = &bytes[n..];
            if self.block_len == 64 {
                Self::compress(&mut self.state, &self.block);
                self.block_len = 0;
            }
        }
    }

    /// The digest of everything added.
    pub fn finish(mut self) -> [u8; 32] {
        let bits = self.total.wrapping_mul(8);
        self.update(&[0x80]);
        while self.block_len != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        let mut out = [0u8; 32];
        for (chunk, s) in out.chunks_exact_mut(4).zip(self.state) {
            chunk.copy_from_slice(&s.to_be_bytes());
        }
        out
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn frame(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = std::vec![0u8; MAX_FRAME];
        let n = encode_frame(kind, seq, &[payload], &mut out).expect("encode");
        out.truncate(n);
        out
    }

    /// Feeds `bytes` in pieces of `step`, collecting every frame.
    fn decode_all(bytes: &[u8], step: usize) -> (Vec<(u16, u32, Vec<u8>)>, u64) {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            let mut piece = &bytes[at..end];
            while !piece.is_empty() {
                let n = d.push(piece);
                piece = &piece[n..];
                if let Some((h, p)) = d.frame() {
                    got.push((h.kind, h.seq, p.to_vec()));
                    d.pop();
                }
            }
            at = end;
        }
        (got, d.skipped())
    }

    #[test]
    fn known_checksums() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        let hex = |d: [u8; 32]| {
            d.iter()
                .map(|b| std::format!("{b:02x}"))
                .collect::<std::string::String>()
        };
        assert_eq!(
            hex(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(sha256(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let mut h = Sha256::new();
        for _ in 0..1000 {
            h.update(&[b'a'; 1000]);
        }
        assert_eq!(
            hex(h.finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn round_trip_and_header() {
        let f = frame(KIND_LIST, 7, b"hello");
        assert_eq!(f.len(), HEADER_LEN + 5);
        assert_eq!(&f[..4], b"PVMG");
        let (got, skipped) = decode_all(&f, 1);
        assert_eq!(got, [(KIND_LIST, 7, b"hello".to_vec())]);
        assert_eq!(skipped, 0);
        let mut small = [0u8; 10];
        assert_eq!(
            encode_frame(1, 1, &[b"x"], &mut small),
            Err(EncodeError::NoRoom)
        );
        let big = std::vec![0u8; MAX_PAYLOAD + 1];
        let mut out = std::vec![0u8; MAX_FRAME + 8];
        assert_eq!(
            encode_frame(1, 1, &[&big], &mut out),
            Err(EncodeError::TooLong)
        );
    }

    #[test]
    fn resynchronises_after_garbage_and_a_cut_frame() {
        let a = frame(KIND_INFO, 1, b"");
        let b = frame(KIND_CREATE, 2, &[9u8; 300]);
        let c = frame(KIND_LIST, 3, b"abc");
        let mut stream = Vec::new();
        stream.extend_from_slice(b"garbage PVMG noise PV");
        stream.extend_from_slice(&a);
        // A frame cut in the middle (the client went away), then a new one.
        stream.extend_from_slice(&b[..100]);
        stream.extend_from_slice(&c);
        stream.extend_from_slice(&b);
        for step in [1, 3, 17, 4096] {
            let (got, skipped) = decode_all(&stream, step);
            let kinds: Vec<(u16, u32)> = got.iter().map(|g| (g.0, g.1)).collect();
            assert_eq!(
                kinds,
                [(KIND_INFO, 1), (KIND_LIST, 3), (KIND_CREATE, 2)],
                "step {step}"
            );
            assert!(skipped >= 100 + 21, "step {step}: {skipped}");
        }
    }

    #[test]
    fn reset_drops_a_partial_frame() {
        let b = frame(KIND_CREATE, 2, &[1u8; 50]);
        let mut d = Decoder::new();
        assert_eq!(d.push(&b[..30]), 30);
        assert!(d.partial());
        d.reset();
        assert!(!d.partial());
        assert_eq!(d.push(&b), b.len());
        assert_eq!(d.frame().map(|(h, p)| (h.seq, p.len())), Some((2, 50)));
        // Nothing is taken while a frame waits.
        assert_eq!(d.push(b"xyz"), 0);
        d.pop();
        assert_eq!(d.push(b"xyz"), 3);
    }

    #[test]
    fn create_requests_parse_and_refuse() {
        let fixed = CreateFixed {
            image: [3; 32],
            max_pages: 256,
            vcpus: 1,
            nr_disks: 1,
            nr_nics: 1,
            cmdline_len: 5,
            name: name_field("tiny-1").expect("name"),
            ..CreateFixed::default()
        };
        let disk = DiskSpec {
            view: VIEW_GPT,
            first: 1,
            ..DiskSpec::default()
        };
        let nic = NicSpec {
            mac: [2, 0, 0, 0, 0, 9, 0, 0],
        };
        let mut payload = Vec::new();
        payload.extend_from_slice(fixed.as_bytes());
        payload.extend_from_slice(disk.as_bytes());
        payload.extend_from_slice(nic.as_bytes());
        payload.extend_from_slice(b"beat=");
        let req = CreateRequest::parse(&payload).expect("parse");
        assert_eq!(req.disk(0), Some(disk));
        assert_eq!(req.disk(1), None);
        assert_eq!(req.nic(0), Some(nic));
        assert_eq!((req.nr_disks(), req.nr_nics()), (1, 1));
        assert_eq!(req.cmdline, "beat=");
        assert_eq!(name_str(&req.fixed.name), Some("tiny-1"));
        assert_eq!(
            CreateRequest::parse(&payload[..payload.len() - 1]).err(),
            Some(PayloadError::Length)
        );
        let mut bad = payload.clone();
        bad[fixed.as_bytes().len() - 1] = b'x'; // junk after the name's NUL
        assert_eq!(CreateRequest::parse(&bad).err(), Some(PayloadError::Field));
        let mut many = fixed;
        many.nr_disks = 5;
        assert_eq!(
            CreateRequest::parse(many.as_bytes()).err(),
            Some(PayloadError::TooMany)
        );
        assert_eq!(name_field(&"x".repeat(32)), None);
    }

    proptest! {
        #[test]
        fn frames_survive_any_noise_between_them(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..600), 1..6),
            noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 6),
            step in 1usize..700,
        ) {
            let mut stream = Vec::new();
            for (i, p) in payloads.iter().enumerate() {
                // Noise without the magic's first byte cannot start a false frame.
                stream.extend(noise[i].iter().map(|&b| if b == b'P' { 0 } else { b }));
                stream.extend_from_slice(&frame(KIND_CONSOLE_WRITE, i as u32, p));
            }
            let (got, _) = decode_all(&stream, step);
            prop_assert_eq!(got.len(), payloads.len());
            for (i, (kind, seq, p)) in got.iter().enumerate() {
                prop_assert_eq!((*kind, *seq as usize), (KIND_CONSOLE_WRITE, i));
                prop_assert_eq!(p, &payloads[i]);
            }
        }

        #[test]
        fn decoder_never_panics_and_never_yields_a_bad_frame(bytes in proptest::collection::vec(any::<u8>(), 0..3000)) {
            let mut d = Decoder::new();
            let mut piece = &bytes[..];
            while !piece.is_empty() {
                let n = d.push(piece);
                piece = &piece[n..];
                if let Some((h, p)) = d.frame() {
                    prop_assert_eq!(h.magic, MGMT_MAGIC);
                    prop_assert_eq!(crc32(p), h.payload_crc);
                    d.pop();
                }
            }
        }

        #[test]
        fn create_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(req) = CreateRequest::parse(&bytes) {
                prop_assert!(req.nr_disks() <= MAX_DISKS && req.nr_nics() <= MAX_NICS);
            }
        }
    }
}
