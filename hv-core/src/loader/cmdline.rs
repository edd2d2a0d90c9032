//! Command lines from the boot loader: each boot module's string turned into
//! the parameters of the domain it creates, and the hypervisor's own options.
//!
//! A module string reads
//! `path/to/hello.elf name=hello-1 mem=16M vcpus=1 -- guest args here`: the
//! image path (first token, as QEMU and GRUB put it), `key=value` tokens, and,
//! after a lone `--` token, the guest's command line passed through verbatim
//! (leading whitespace trimmed). Tokens are separated by ASCII whitespace.
//!
//! The strings come from the boot loader's configuration, so they are parsed
//! without panicking and without allocating; results borrow the input.
//!
//! # Invariants
//! Every [`DomainParams`] returned by [`parse_module_cmdline`] has a `name` of
//! 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`, `mem_bytes` a multiple of
//! 4 KiB and at least [`MIN_MEM_BYTES`], `vcpus` in `1..=`[`MAX_VCPUS`], and a
//! `guest_cmdline` of at most [`MAX_GUEST_CMDLINE`] bytes, so name and command
//! line fit `StartInfo` with their NULs. [`parse_hv_cmdline`] never fails: bad
//! options become warnings and the defaults stay.
#![deny(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

use core::fmt;

use hypercall_abi::start_info::{CMDLINE_SIZE, NAME_SIZE};

use crate::platform::pci::Dom0Pci;

/// Memory a domain gets without `mem=`.
pub const DEFAULT_MEM_BYTES: u64 = 16 << 20;
/// Smallest `mem=` accepted.
pub const MIN_MEM_BYTES: u64 = 1 << 20;
/// Longest domain name (`StartInfo.name` keeps a byte for the NUL).
pub const MAX_NAME_LEN: usize = 31;
/// Longest guest command line (`StartInfo.cmdline` keeps a byte for the NUL).
pub const MAX_GUEST_CMDLINE: usize = 1023;
/// Most vCPUs a domain may ask for.
pub const MAX_VCPUS: u32 = 32;
/// Weight of a domain that does not ask for one.
pub const DEFAULT_WEIGHT: u32 = 256;
/// Largest `weight=`.
pub const MAX_WEIGHT: u32 = 65535;
/// Largest `pin=` (a pCPU index).
pub const MAX_PIN: u32 = 255;

const _: () = assert!(MAX_NAME_LEN < NAME_SIZE);
const _: () = assert!(MAX_GUEST_CMDLINE < CMDLINE_SIZE);

const PAGE_SIZE: u64 = 4096;

/// What a boot module's string asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainParams<'a> {
    /// The first token: the image's path as the boot loader gave it.
    pub image_path: &'a str,
    /// `name=`, by default the image file name without directories and `.elf`.
    pub name: &'a str,
    /// `mem=`, by default [`DEFAULT_MEM_BYTES`].
    pub mem_bytes: u64,
    /// `vcpus=`, by default 1.
    pub vcpus: u32,
    /// `weight=`: the scheduling weight of each vCPU (1..=65535), by default
    /// [`DEFAULT_WEIGHT`].
    pub weight: u32,
    /// `cap=`: at most this percent of one pCPU per vCPU (1..=100); 0 (the
    /// default) is no cap.
    pub cap_percent: u32,
    /// `pin=<cpu>[,<cpu>...]`: vCPU `n` runs only on the `n`-th listed pCPU
    /// (the list repeats; never migrated); by default vCPUs are placed on
    /// the least-loaded pCPU and may migrate.
    pub pin: PinList,
    /// Everything after `--`, leading whitespace trimmed; empty without `--`.
    pub guest_cmdline: &'a str,
    /// `hold` (a key without value, since ABI 0.6): keep the module's bytes for
    /// the toolstack instead of building it (TS-14).
    pub hold: bool,
}

/// The pCPUs of `pin=`, at most [`MAX_PINS`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PinList {
    cpus: [u32; MAX_PINS],
    len: usize,
}

/// Most pCPUs one `pin=` lists.
pub const MAX_PINS: usize = 8;

impl PinList {
    /// The pCPU vCPU `vcpu` is pinned to, if any.
    pub fn for_vcpu(&self, vcpu: u32) -> Option<u32> {
        let n = usize::try_from(vcpu).ok()?.checked_rem(self.len)?;
        self.cpus.get(n).copied()
    }

    /// Whether no pCPU is listed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// Why a size such as `16M` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeError {
    /// The string is empty.
    Empty,
    /// It does not start with a decimal digit, or a non-letter follows the digits.
    NotANumber,
    /// The digits are followed by a letter that is not K, M or G.
    UnknownSuffix(char),
    /// Something follows the K, M or G suffix.
    TrailingAfterSuffix(char),
    /// The size does not fit in 64 bits.
    Overflow,
    /// The size is zero.
    Zero,
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => f.write_str("empty size"),
            Self::NotANumber => {
                f.write_str("not a whole number of bytes (e.g. 4096, 512K, 16M, 1G)")
            }
            Self::UnknownSuffix(c) => {
                write!(f, "unknown size suffix `{c}` (use K, M or G)")
            }
            Self::TrailingAfterSuffix(c) => {
                write!(
                    f,
                    "unexpected `{c}` after the size suffix (use K, M or G alone)"
                )
            }
            Self::Overflow => f.write_str("size too large"),
            Self::Zero => f.write_str("size is zero"),
        }
    }
}

/// Parses a byte count: decimal digits and an optional binary suffix `K`, `M`
/// or `G` (any case), e.g. `4096`, `512K`, `16M`, `1G`. Zero is refused.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    if s.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, suffix) = s
        .split_at_checked(digits_end)
        .ok_or(SizeError::NotANumber)?;
    if digits.is_empty() {
        return Err(SizeError::NotANumber);
    }
    let mut value: u64 = 0;
    for b in digits.bytes() {
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b.wrapping_sub(b'0'))))
            .ok_or(SizeError::Overflow)?;
    }
    let mut rest = suffix.chars();
    let shift = match rest.next() {
        None => 0,
        Some('k' | 'K') => 10,
        Some('m' | 'M') => 20,
        Some('g' | 'G') => 30,
        Some(c) if c.is_alphabetic() => return Err(SizeError::UnknownSuffix(c)),
        Some(_) => return Err(SizeError::NotANumber),
    };
    if let Some(c) = rest.next() {
        return Err(SizeError::TrailingAfterSuffix(c));
    }
    if value == 0 {
        return Err(SizeError::Zero);
    }
    value.checked_mul(1u64 << shift).ok_or(SizeError::Overflow)
}

/// Why a boot module's string was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamError<'a> {
    /// The string is empty or only whitespace: no image path.
    EmptyModuleString,
    /// A key other than `name`, `mem` or `vcpus` (or a token without `=`).
    UnknownKey(&'a str),
    /// A known key without `=` or with an empty value.
    MissingValue(&'a str),
    /// A key given twice.
    Duplicate(&'a str),
    /// `mem=` is not a size.
    BadMemory { value: &'a str, why: SizeError },
    /// `mem=` is below [`MIN_MEM_BYTES`].
    MemoryTooSmall(u64),
    /// `mem=` is not a multiple of 4 KiB.
    MemoryNotPageMultiple(u64),
    /// `vcpus=` is not a number in `1..=MAX_VCPUS`.
    BadVcpus(&'a str),
    /// `weight=`, `cap=` or `pin=` is not a number in its range.
    OutOfRange {
        key: &'a str,
        value: &'a str,
        min: u32,
        max: u32,
    },
    /// `name=` is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong(&'a str),
    /// The name is empty or has characters other than `[A-Za-z0-9._-]`
    /// (also: a default name, from the image path, that is not valid).
    BadName(&'a str),
    /// The guest command line (its length here) exceeds [`MAX_GUEST_CMDLINE`].
    CmdlineTooLong(usize),
}

impl fmt::Display for ParamError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::EmptyModuleString => f.write_str(
                "empty module command line (expected `path/to/image.elf [name=..] [mem=..] [vcpus=..] [-- guest args]`)",
            ),
            Self::UnknownKey(key) => {
                write!(
                    f,
                    "unknown parameter `{key}` (known: name, mem, vcpus, weight, cap, pin, hold)"
                )
            }
            Self::MissingValue(key) => write!(f, "parameter `{key}` needs a value (`{key}=...`)"),
            Self::Duplicate(key) => write!(f, "parameter `{key}` is given more than once"),
            Self::BadMemory { value, why } => write!(f, "bad value `{value}` for mem: {why}"),
            Self::MemoryTooSmall(bytes) => write!(
                f,
                "mem is {bytes} bytes, below the minimum of {} MiB",
                MIN_MEM_BYTES >> 20
            ),
            Self::MemoryNotPageMultiple(bytes) => write!(
                f,
                "mem is {bytes} bytes, not a multiple of the 4 KiB page size"
            ),
            Self::BadVcpus(value) => write!(
                f,
                "bad value `{value}` for vcpus (expected a number from 1 to {MAX_VCPUS})"
            ),
            Self::OutOfRange {
                key,
                value,
                min,
                max,
            } => write!(
                f,
                "bad value `{value}` for {key} (expected a number from {min} to {max})"
            ),
            Self::NameTooLong(name) => write!(
                f,
                "name `{name}` is {} bytes, longer than the limit of {MAX_NAME_LEN}",
                name.len()
            ),
            Self::BadName(name) => write!(
                f,
                "bad domain name `{name}` (use 1 to {MAX_NAME_LEN} characters from A-Z a-z 0-9 . _ -; set one with name=)"
            ),
            Self::CmdlineTooLong(len) => write!(
                f,
                "guest command line is {len} bytes, longer than the limit of {MAX_GUEST_CMDLINE}"
            ),
        }
    }
}

/// Whitespace-separated tokens of a string, keeping the unsplit rest available.
struct Tokens<'a> {
    rest: &'a str,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a str) -> Self {
        Self { rest: s }
    }

    /// What follows the last token returned, leading whitespace trimmed.
    fn rest(&self) -> &'a str {
        self.rest
            .trim_start_matches(|c: char| c.is_ascii_whitespace())
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest();
        if s.is_empty() {
            self.rest = s;
            return None;
        }
        let (token, rest) = s
            .split_once(|c: char| c.is_ascii_whitespace())
            .unwrap_or((s, ""));
        self.rest = rest;
        Some(token)
    }
}

/// Whether `name` is 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`.
fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The default domain name: the image file name without directories and
/// without a trailing `.elf`.
fn default_name(image_path: &str) -> &str {
    let file = image_path.rsplit('/').next().unwrap_or(image_path);
    file.strip_suffix(".elf").unwrap_or(file)
}

/// Parses one boot module's string; see the module docs for the syntax.
pub fn parse_module_cmdline(s: &str) -> Result<DomainParams<'_>, ParamError<'_>> {
    let mut tokens = Tokens::new(s);
    let image_path = tokens.next().ok_or(ParamError::EmptyModuleString)?;
    let mut name = None;
    let mut mem_bytes = None;
    let mut vcpus = None;
    let mut weight = None;
    let mut cap = None;
    let mut pin: Option<PinList> = None;
    let mut guest_cmdline = "";
    let mut hold = false;

    while let Some(token) = tokens.next() {
        if token == "--" {
            guest_cmdline = tokens.rest();
            break;
        }
        if token == "hold" {
            if hold {
                return Err(ParamError::Duplicate(token));
            }
            hold = true;
            continue;
        }
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        if !matches!(key, "name" | "mem" | "vcpus" | "weight" | "cap" | "pin") {
            return Err(ParamError::UnknownKey(key));
        }
        if value.is_empty() {
            return Err(ParamError::MissingValue(key));
        }
        let already = match key {
            "name" => name.replace(parse_name(value)?).is_some(),
            "mem" => mem_bytes.replace(parse_mem(value)?).is_some(),
            "weight" => weight
                .replace(parse_ranged(key, value, 1, MAX_WEIGHT)?)
                .is_some(),
            "cap" => cap.replace(parse_ranged(key, value, 0, 100)?).is_some(),
            "pin" => pin.replace(parse_pins(value)?).is_some(),
            _ => vcpus.replace(parse_vcpus(value)?).is_some(),
        };
        if already {
            return Err(ParamError::Duplicate(key));
        }
    }

    if guest_cmdline.len() > MAX_GUEST_CMDLINE {
        return Err(ParamError::CmdlineTooLong(guest_cmdline.len()));
    }
    let name = match name {
        Some(name) => name,
        None => {
            let name = default_name(image_path);
            if !is_valid_name(name) {
                return Err(ParamError::BadName(name));
            }
            name
        }
    };
    Ok(DomainParams {
        image_path,
        name,
        mem_bytes: mem_bytes.unwrap_or(DEFAULT_MEM_BYTES),
        vcpus: vcpus.unwrap_or(1),
        weight: weight.unwrap_or(DEFAULT_WEIGHT),
        cap_percent: cap.unwrap_or(0),
        pin: pin.unwrap_or_default(),
        guest_cmdline,
        hold,
    })
}

/// `pin=`: comma-separated pCPU indices, 1 to [`MAX_PINS`] of them.
fn parse_pins(value: &str) -> Result<PinList, ParamError<'_>> {
    let mut list = PinList::default();
    for part in value.split(',') {
        let cpu = parse_ranged("pin", part, 0, MAX_PIN)?;
        let slot = list.cpus.get_mut(list.len).ok_or(ParamError::OutOfRange {
            key: "pin",
            value,
            min: 0,
            max: MAX_PIN,
        })?;
        *slot = cpu;
        list.len = list.len.saturating_add(1);
    }
    Ok(list)
}

/// A decimal number in `min..=max` for `key`.
fn parse_ranged<'a>(
    key: &'a str,
    value: &'a str,
    min: u32,
    max: u32,
) -> Result<u32, ParamError<'a>> {
    match value.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ParamError::OutOfRange {
            key,
            value,
            min,
            max,
        }),
    }
}

fn parse_name(value: &str) -> Result<&str, ParamError<'_>> {
    if value.len() > MAX_NAME_LEN {
        return Err(ParamError::NameTooLong(value));
    }
    if !is_valid_name(value) {
        return Err(ParamError::BadName(value));
    }
    Ok(value)
}

fn parse_mem(value: &str) -> Result<u64, ParamError<'_>> {
    let bytes = parse_size(value).map_err(|why| ParamError::BadMemory { value, why })?;
    if bytes < MIN_MEM_BYTES {
        return Err(ParamError::MemoryTooSmall(bytes));
    }
    if bytes & (PAGE_SIZE - 1) != 0 {
        return Err(ParamError::MemoryNotPageMultiple(bytes));
    }
    Ok(bytes)
}

fn parse_vcpus(value: &str) -> Result<u32, ParamError<'_>> {
    value
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_VCPUS).contains(n))
        .ok_or(ParamError::BadVcpus(value))
}

/// The hypervisor's own options.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HvParams {
    /// `loglvl=error|warn|info|debug|trace`.
    pub log_level: log::LevelFilter,
    /// `timeslice_us=` (100 to 1 000 000): the scheduler's time slice.
    pub timeslice_us: u32,
    /// `audit=0|1`: check the frame table against every page table after each
    /// domain ends and before power-off (SPEC MM-8).
    pub audit: bool,
    /// `iommu=on|off` (PDEV-2): off only when given explicitly; then devices
    /// are assigned without DMA protection.
    pub iommu_off: bool,
    /// `dom0_pci=all|none|bb:dd.f+…` (PDEV-2).
    pub dom0_pci: Dom0Pci,
}

impl Default for HvParams {
    fn default() -> Self {
        Self {
            log_level: log::LevelFilter::Info,
            timeslice_us: 10_000,
            audit: false,
            iommu_off: false,
            dom0_pci: Dom0Pci::All,
        }
    }
}

/// Shortest accepted `timeslice_us`.
pub const MIN_TIMESLICE_US: u32 = 100;
/// Longest accepted `timeslice_us`.
pub const MAX_TIMESLICE_US: u32 = 1_000_000;
/// Most warnings [`parse_hv_cmdline`] reports; later ones are dropped.
pub const MAX_HV_WARNINGS: usize = 8;

/// An option of the hypervisor command line that was ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvParamWarning<'a> {
    /// A token that is not a known `key=value` option.
    UnknownOption(&'a str),
    /// A known key with a value it does not accept (empty when `=` is missing).
    BadValue { key: &'a str, value: &'a str },
}

impl fmt::Display for HvParamWarning<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::UnknownOption(option) => write!(f, "ignoring unknown option `{option}`"),
            Self::BadValue { key, value } => {
                write!(f, "ignoring bad value `{value}` for `{key}`")
            }
        }
    }
}

/// Parses the hypervisor's command line. The first token is the kernel's path
/// and is skipped, unless it contains `=` (a loader that omits the path).
/// Unknown options and bad values are reported as warnings (at most
/// [`MAX_HV_WARNINGS`]) and leave the default in place; a later valid option
/// overrides an earlier one.
pub fn parse_hv_cmdline(s: &str) -> (HvParams, heapless::Vec<HvParamWarning<'_>, MAX_HV_WARNINGS>) {
    let mut params = HvParams::default();
    let mut warnings = heapless::Vec::new();
    let mut tokens = Tokens::new(s).peekable();
    if tokens.peek().is_some_and(|first| !first.contains('=')) {
        tokens.next();
    }
    for token in tokens {
        let warning = match token.split_once('=') {
            Some(("loglvl", value)) => match parse_level(value) {
                Some(level) => {
                    params.log_level = level;
                    None
                }
                None => Some(HvParamWarning::BadValue {
                    key: "loglvl",
                    value,
                }),
            },
            Some(("timeslice_us", value)) => match parse_timeslice(value) {
                Some(us) => {
                    params.timeslice_us = us;
                    None
                }
                None => Some(HvParamWarning::BadValue {
                    key: "timeslice_us",
                    value,
                }),
            },
            Some(("audit", value)) => match value {
                "0" | "1" => {
                    params.audit = value == "1";
                    None
                }
                _ => Some(HvParamWarning::BadValue {
                    key: "audit",
                    value,
                }),
            },
            Some(("iommu", value)) => match value {
                "on" | "off" => {
                    params.iommu_off = value == "off";
                    None
                }
                _ => Some(HvParamWarning::BadValue {
                    key: "iommu",
                    value,
                }),
            },
            Some(("dom0_pci", value)) => match Dom0Pci::parse(value) {
                Some(policy) => {
                    params.dom0_pci = policy;
                    None
                }
                None => Some(HvParamWarning::BadValue {
                    key: "dom0_pci",
                    value,
                }),
            },
            None if matches!(
                token,
                "loglvl" | "timeslice_us" | "audit" | "iommu" | "dom0_pci"
            ) =>
            {
                Some(HvParamWarning::BadValue {
                    key: token,
                    value: "",
                })
            }
            _ => Some(HvParamWarning::UnknownOption(token)),
        };
        if let Some(warning) = warning {
            // Full: the first MAX_HV_WARNINGS are enough to see what is wrong.
            let _ = warnings.push(warning);
        }
    }
    (params, warnings)
}

fn parse_level(value: &str) -> Option<log::LevelFilter> {
    match value {
        "error" => Some(log::LevelFilter::Error),
        "warn" => Some(log::LevelFilter::Warn),
        "info" => Some(log::LevelFilter::Info),
        "debug" => Some(log::LevelFilter::Debug),
        "trace" => Some(log::LevelFilter::Trace),
        _ => None,
    }
}

fn parse_timeslice(value: &str) -> Option<u32> {
    value
        .parse::<u32>()
        .ok()
        .filter(|us| (MIN_TIMESLICE_US..=MAX_TIMESLICE_US).contains(us))
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::arithmetic_side_effects
)]
mod tests {
    use super::*;
    use crate::platform::pci::Bdf;
    use proptest::prelude::*;

    fn params(s: &str) -> DomainParams<'_> {
        parse_module_cmdline(s).unwrap()
    }

    fn err(s: &str) -> ParamError<'_> {
        parse_module_cmdline(s).unwrap_err()
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("16m"), Ok(16 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("3g"), Ok(3 << 30));
        assert_eq!(parse_size("007"), Ok(7));
        assert_eq!(parse_size(&u64::MAX.to_string()), Ok(u64::MAX));
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert_eq!(parse_size("M"), Err(SizeError::NotANumber));
        assert_eq!(parse_size("-1"), Err(SizeError::NotANumber));
        assert_eq!(parse_size("1.5M"), Err(SizeError::NotANumber));
        assert_eq!(parse_size(" 1"), Err(SizeError::NotANumber));
        assert_eq!(parse_size("12Q"), Err(SizeError::UnknownSuffix('Q')));
        assert_eq!(parse_size("12é"), Err(SizeError::UnknownSuffix('é')));
        assert_eq!(parse_size("16MB"), Err(SizeError::TrailingAfterSuffix('B')));
        assert_eq!(parse_size("16M "), Err(SizeError::TrailingAfterSuffix(' ')));
        assert_eq!(parse_size("0"), Err(SizeError::Zero));
        assert_eq!(parse_size("0G"), Err(SizeError::Zero));
        assert_eq!(parse_size("18446744073709551616"), Err(SizeError::Overflow));
        assert_eq!(parse_size("17179869184G"), Err(SizeError::Overflow));
        assert_eq!(parse_size("17179869183G"), Ok(17179869183 << 30));
    }

    #[test]
    fn hold_flag() {
        let p = params("guest.elf hold name=g mem=4M -- hold me");
        assert!(p.hold);
        assert_eq!(p.guest_cmdline, "hold me");
        assert!(!params("guest.elf mem=4M").hold);
        assert_eq!(
            parse_module_cmdline("guest.elf hold hold"),
            Err(ParamError::Duplicate("hold"))
        );
        assert_eq!(
            parse_module_cmdline("guest.elf hold=1"),
            Err(ParamError::UnknownKey("hold"))
        );
    }

    #[test]
    fn defaults() {
        assert_eq!(
            params("hello.elf"),
            DomainParams {
                image_path: "hello.elf",
                name: "hello",
                mem_bytes: DEFAULT_MEM_BYTES,
                vcpus: 1,
                weight: DEFAULT_WEIGHT,
                cap_percent: 0,
                pin: PinList::default(),
                guest_cmdline: "",
                hold: false,
            }
        );
        let p = params("/boot/guests/net-back.v2.elf");
        assert_eq!(p.image_path, "/boot/guests/net-back.v2.elf");
        assert_eq!(p.name, "net-back.v2");
        assert_eq!(params("dir/kernel").name, "kernel");
        assert_eq!(params("kernel.elf.elf").name, "kernel.elf");
    }

    #[test]
    fn full_line() {
        assert_eq!(
            params("path/to/hello.elf name=hello-1 mem=16M vcpus=1 -- guest args here"),
            DomainParams {
                image_path: "path/to/hello.elf",
                name: "hello-1",
                mem_bytes: 16 << 20,
                vcpus: 1,
                weight: DEFAULT_WEIGHT,
                cap_percent: 0,
                pin: PinList::default(),
                guest_cmdline: "guest args here",
                hold: false,
            }
        );
        let p = params("  \thello.elf   mem=2M\t\tvcpus=32   name=A_b.c-9  ");
        assert_eq!((p.name, p.mem_bytes, p.vcpus), ("A_b.c-9", 2 << 20, 32));
        assert_eq!(p.guest_cmdline, "");
    }

    #[test]
    fn scheduling_parameters() {
        let p = params("g.elf weight=512 cap=25 pin=3");
        assert_eq!(
            (p.weight, p.cap_percent, p.pin.for_vcpu(0)),
            (512, 25, Some(3))
        );
        assert_eq!(p.pin.for_vcpu(5), Some(3));
        let p = params("g.elf vcpus=3 pin=1,0");
        assert_eq!(
            (p.pin.for_vcpu(0), p.pin.for_vcpu(1), p.pin.for_vcpu(2)),
            (Some(1), Some(0), Some(1))
        );
        assert_eq!(params("g.elf").pin.for_vcpu(0), None);
        for bad in [
            "weight=0",
            "weight=65536",
            "cap=101",
            "cap=-1",
            "pin=256",
            "pin=x",
            "pin=1,",
            "pin=0,1,2,3,4,5,6,7,8",
        ] {
            let line = alloc::format!("g.elf {bad}");
            let err = parse_module_cmdline(&line).unwrap_err();
            assert!(
                matches!(err, ParamError::OutOfRange { .. }),
                "{bad}: {err:?}"
            );
            assert!(alloc::format!("{err}").starts_with("bad value"), "{err}");
        }
        assert!(matches!(
            parse_module_cmdline("g.elf cap=10 cap=20"),
            Err(ParamError::Duplicate("cap"))
        ));
    }

    #[test]
    fn guest_cmdline_is_verbatim() {
        let p = params("hello.elf --   console=hvc0 mem=99Q -- name=x  trailing  ");
        assert_eq!(
            p.guest_cmdline,
            "console=hvc0 mem=99Q -- name=x  trailing  "
        );
        assert_eq!(p.mem_bytes, DEFAULT_MEM_BYTES);
        assert_eq!(p.name, "hello");
        assert_eq!(params("hello.elf vcpus=2 --").guest_cmdline, "");
        assert_eq!(params("hello.elf --   ").guest_cmdline, "");
        // `--x` or `x--` are not the separator.
        assert_eq!(err("hello.elf --x"), ParamError::UnknownKey("--x"));
        let long = format!("h.elf -- {}", "a".repeat(MAX_GUEST_CMDLINE));
        assert_eq!(params(&long).guest_cmdline.len(), MAX_GUEST_CMDLINE);
        let long = format!("h.elf -- {}", "a".repeat(MAX_GUEST_CMDLINE + 1));
        assert_eq!(
            err(&long),
            ParamError::CmdlineTooLong(MAX_GUEST_CMDLINE + 1)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(err(""), ParamError::EmptyModuleString);
        assert_eq!(err(" \t\n "), ParamError::EmptyModuleString);
        assert_eq!(
            err("h.elf frobnicate=1"),
            ParamError::UnknownKey("frobnicate")
        );
        assert_eq!(err("h.elf quiet"), ParamError::UnknownKey("quiet"));
        assert_eq!(err("h.elf =5"), ParamError::UnknownKey(""));
        assert_eq!(err("h.elf mem"), ParamError::MissingValue("mem"));
        assert_eq!(err("h.elf mem="), ParamError::MissingValue("mem"));
        assert_eq!(err("h.elf name="), ParamError::MissingValue("name"));
        assert_eq!(err("h.elf vcpus"), ParamError::MissingValue("vcpus"));
        assert_eq!(err("h.elf mem=2M mem=2M"), ParamError::Duplicate("mem"));
        assert_eq!(
            err("h.elf name=a vcpus=1 name=b"),
            ParamError::Duplicate("name")
        );
        assert_eq!(err("h.elf vcpus=1 vcpus=1"), ParamError::Duplicate("vcpus"));
        assert_eq!(
            err("h.elf mem=12Q"),
            ParamError::BadMemory {
                value: "12Q",
                why: SizeError::UnknownSuffix('Q')
            }
        );
        assert_eq!(
            err("h.elf mem=0"),
            ParamError::BadMemory {
                value: "0",
                why: SizeError::Zero
            }
        );
        assert_eq!(
            err("h.elf mem=1023K"),
            ParamError::MemoryTooSmall(1023 << 10)
        );
        assert_eq!(params("h.elf mem=1M").mem_bytes, MIN_MEM_BYTES);
        assert_eq!(
            err("h.elf mem=1048577"),
            ParamError::MemoryNotPageMultiple(1048577)
        );
        for bad in ["0", "33", "-1", "x", "4294967296", "1.0"] {
            let line = format!("h.elf vcpus={bad}");
            assert_eq!(
                parse_module_cmdline(&line).unwrap_err(),
                ParamError::BadVcpus(bad)
            );
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        let line = format!("h.elf name={long}");
        assert_eq!(
            parse_module_cmdline(&line).unwrap_err(),
            ParamError::NameTooLong(&long)
        );
        let ok = "n".repeat(MAX_NAME_LEN);
        assert_eq!(params(&format!("h.elf name={ok}")).name.len(), MAX_NAME_LEN);
        assert_eq!(err("h.elf name=a/b"), ParamError::BadName("a/b"));
        assert_eq!(err("h.elf name=né"), ParamError::BadName("né"));
        // Invalid default names.
        assert_eq!(err("dir/"), ParamError::BadName(""));
        assert_eq!(err(".elf"), ParamError::BadName(""));
        assert_eq!(err("a+b.elf"), ParamError::BadName("a+b"));
        let long_path = format!("{}.elf", "x".repeat(40));
        assert_eq!(
            parse_module_cmdline(&long_path).unwrap_err(),
            ParamError::BadName(&long_path[..40])
        );
        // An explicit name rescues an image path that makes a bad default.
        assert_eq!(params("a+b.elf name=ab").name, "ab");
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            ParamError::UnknownKey("frobnicate").to_string(),
            "unknown parameter `frobnicate` (known: name, mem, vcpus, weight, cap, pin, hold)"
        );
        assert_eq!(
            ParamError::BadMemory {
                value: "12Q",
                why: SizeError::UnknownSuffix('Q')
            }
            .to_string(),
            "bad value `12Q` for mem: unknown size suffix `Q` (use K, M or G)"
        );
        let all = [
            ParamError::EmptyModuleString,
            ParamError::UnknownKey("k"),
            ParamError::MissingValue("mem"),
            ParamError::Duplicate("mem"),
            ParamError::BadMemory {
                value: "x",
                why: SizeError::NotANumber,
            },
            ParamError::MemoryTooSmall(1),
            ParamError::MemoryNotPageMultiple(1),
            ParamError::BadVcpus("0"),
            ParamError::NameTooLong("n"),
            ParamError::BadName("n"),
            ParamError::CmdlineTooLong(2000),
        ];
        for e in all {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{e:?}: {s}");
        }
        let sizes = [
            SizeError::Empty,
            SizeError::NotANumber,
            SizeError::UnknownSuffix('Q'),
            SizeError::TrailingAfterSuffix('B'),
            SizeError::Overflow,
            SizeError::Zero,
        ];
        for e in sizes {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\n'), "{e:?}: {s}");
        }
    }

    #[test]
    fn hv_defaults() {
        for line in ["", "/boot/hv-core", "  hv-core   "] {
            let (p, w) = parse_hv_cmdline(line);
            assert_eq!(p, HvParams::default());
            assert!(w.is_empty());
        }
        assert_eq!(HvParams::default().log_level, log::LevelFilter::Info);
        assert_eq!(HvParams::default().timeslice_us, 10_000);
        assert!(!HvParams::default().audit);
        assert!(parse_hv_cmdline("hv audit=1").0.audit);
        assert!(!HvParams::default().iommu_off);
        assert!(parse_hv_cmdline("hv iommu=off").0.iommu_off);
        assert!(!parse_hv_cmdline("hv iommu=off iommu=on").0.iommu_off);
        assert_eq!(parse_hv_cmdline("hv iommu=maybe").1.len(), 1);
        assert_eq!(HvParams::default().dom0_pci, Dom0Pci::All);
        let p = parse_hv_cmdline("hv dom0_pci=00:03.0+00:1f.2").0;
        assert_eq!(
            p.dom0_pci.listed(),
            [Bdf::new(0, 3, 0), Bdf::new(0, 0x1f, 2)]
        );
        assert_eq!(
            parse_hv_cmdline("hv dom0_pci=none").0.dom0_pci,
            Dom0Pci::None
        );
        assert_eq!(parse_hv_cmdline("hv dom0_pci=03.0").1.len(), 1);
        assert_eq!(parse_hv_cmdline("hv audit=yes").1.len(), 1);
    }

    #[test]
    fn hv_options() {
        let (p, w) = parse_hv_cmdline("/boot/hv-core loglvl=trace   timeslice_us=100");
        assert_eq!(p.log_level, log::LevelFilter::Trace);
        assert_eq!(p.timeslice_us, 100);
        assert!(w.is_empty());
        for (lvl, want) in [
            ("error", log::LevelFilter::Error),
            ("warn", log::LevelFilter::Warn),
            ("info", log::LevelFilter::Info),
            ("debug", log::LevelFilter::Debug),
            ("trace", log::LevelFilter::Trace),
        ] {
            let line = format!("hv loglvl={lvl}");
            assert_eq!(parse_hv_cmdline(&line).0.log_level, want);
        }
        assert_eq!(
            parse_hv_cmdline("hv timeslice_us=1000000").0.timeslice_us,
            1_000_000
        );
        // No kernel path: the first token is an option.
        assert_eq!(
            parse_hv_cmdline("loglvl=debug").0.log_level,
            log::LevelFilter::Debug
        );
        // The last valid value wins.
        assert_eq!(
            parse_hv_cmdline("hv loglvl=debug loglvl=warn").0.log_level,
            log::LevelFilter::Warn
        );
    }

    #[test]
    fn hv_warnings() {
        let (p, w) = parse_hv_cmdline(
            "hv loglvl=loud timeslice_us=99 timeslice_us=1000001 timeslice_us=x quiet x=y loglvl",
        );
        assert_eq!(p, HvParams::default());
        assert_eq!(
            w.as_slice(),
            [
                HvParamWarning::BadValue {
                    key: "loglvl",
                    value: "loud"
                },
                HvParamWarning::BadValue {
                    key: "timeslice_us",
                    value: "99"
                },
                HvParamWarning::BadValue {
                    key: "timeslice_us",
                    value: "1000001"
                },
                HvParamWarning::BadValue {
                    key: "timeslice_us",
                    value: "x"
                },
                HvParamWarning::UnknownOption("quiet"),
                HvParamWarning::UnknownOption("x=y"),
                HvParamWarning::BadValue {
                    key: "loglvl",
                    value: ""
                },
            ]
        );
        assert_eq!(w[0].to_string(), "ignoring bad value `loud` for `loglvl`");
        assert_eq!(w[4].to_string(), "ignoring unknown option `quiet`");
        // Bad values keep an earlier good one.
        let (p, w) = parse_hv_cmdline("hv loglvl=debug loglvl=LOUD");
        assert_eq!(p.log_level, log::LevelFilter::Debug);
        assert_eq!(w.len(), 1);
        // Warnings beyond the capacity are dropped, parsing goes on.
        let (p, w) = parse_hv_cmdline("hv a b c d e f g h i j k loglvl=error");
        assert_eq!(w.len(), MAX_HV_WARNINGS);
        assert_eq!(w[7], HvParamWarning::UnknownOption("h"));
        assert_eq!(p.log_level, log::LevelFilter::Error);
    }

    proptest! {
        #[test]
        fn module_cmdline_never_panics(s in ".{0,200}") {
            if let Ok(p) = parse_module_cmdline(&s) {
                prop_assert!(!p.image_path.is_empty());
                prop_assert!(is_valid_name(p.name));
                prop_assert!(p.mem_bytes >= MIN_MEM_BYTES && p.mem_bytes % 4096 == 0);
                prop_assert!((1..=MAX_VCPUS).contains(&p.vcpus));
                prop_assert!(p.guest_cmdline.len() <= MAX_GUEST_CMDLINE);
            }
        }

        #[test]
        fn structured_cmdline_never_panics(
            path in "[a-z/.+]{0,12}",
            opts in proptest::collection::vec(
                "(name|mem|vcpus|x|--)(=[0-9a-zA-Z.+]{0,6})?", 0..6),
            seps in "[ \t]{1,3}",
        ) {
            let line = format!("{path}{seps}{}", opts.join(&seps));
            let _ = parse_module_cmdline(&line).map_err(|e| e.to_string());
        }

        #[test]
        fn size_never_panics(s in "[0-9]{0,25}[kKmMgGqB. ]{0,2}") {
            if let Ok(n) = parse_size(&s) {
                prop_assert!(n > 0);
            }
        }

        #[test]
        fn hv_cmdline_never_panics(s in ".{0,200}") {
            let (p, w) = parse_hv_cmdline(&s);
            prop_assert!((MIN_TIMESLICE_US..=MAX_TIMESLICE_US).contains(&p.timeslice_us));
            prop_assert!(w.len() <= MAX_HV_WARNINGS);
        }
    }
}
