//! `paravane-tests`: Paravane's QEMU integration scenarios and the judge that
//! decides, from a serial log and QEMU's exit status, whether a scenario passed.
//!
//! This crate owns the *what* of integration testing: which modules a scenario
//! boots beside hv-core, with which parameters, and what the serial log must (or
//! must not) contain. The *how* (building kernels, launching QEMU, timeouts, log
//! files) belongs to `xtask`. Everything here is pure and host-tested.
//!
//! - [`scenarios()`] / [`find`]: the scenario table, kept in `scenarios.rs`;
//!   edit expectations there.
//! - [`judge`]: checks one run (serial log + exit status) against a scenario.
//! - [`elf_mutations`]: turns a valid guest image into a broken one, for the
//!   loader's refusal paths.
//! - [`bench`]: parses the `BENCH name=… value=… unit=…` lines benchmarks print.
//! - [`disk_image`]: disk images the host prepares (an MBR + FAT volume) and
//!   checks after the boot (`fsck.vfat`, files copied back byte for byte).
//!
//! # Serial-log contract (what hv-core prints and the judge relies on)
//! - hypervisor lines start with `(hv) `, guest console lines with `(d<domid>) `;
//! - any line containing `(hv) PANIC` fails a scenario, whatever else happened;
//! - hv-core ends the machine through `isa-debug-exit` with a value from
//!   [`hypercall_abi::machine`], so QEMU exits with [`qemu_status`]`(value)`.
#![forbid(unsafe_code)]

pub mod bench;
pub mod disk_image;
pub mod elf_mutations;
mod scenarios;
mod verdict;

pub use disk_image::{DiskContent, FatVolume, HostFile};
pub use hypercall_abi::machine::{
    qemu_status, EXIT_DRIVER_DOMAIN_CRASHED, EXIT_PANIC, EXIT_POWEROFF, EXIT_REBOOT,
};
pub use verdict::{describe_status, judge, judge_interactive, Verdict, DID_NOT_EXIT, PANIC_MARKER};

/// Which `cargo xtask` command runs a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Run by `cargo xtask test`.
    Test,
    /// The default of `cargo xtask run`; also run by `cargo xtask test`.
    Demo,
    /// Run by `cargo xtask bench`.
    Bench,
}

impl Kind {
    /// Whether `cargo xtask test` runs scenarios of this kind.
    pub const fn in_test_suite(self) -> bool {
        matches!(self, Kind::Test | Kind::Demo)
    }

    /// Lower-case name, as `cargo xtask run --list` prints it.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Test => "test",
            Kind::Demo => "demo",
            Kind::Bench => "bench",
        }
    }
}

/// Where a module's image comes from.
#[derive(Clone, Copy, Debug)]
pub enum Image {
    /// A guest kernel binary built by `cargo xtask build` (the bin name, which is
    /// also its package name), e.g. `"driver-domain"` or `"hello"`.
    Guest(&'static str),
    /// A guest binary passed through `mutate` and written to `file_name` in the
    /// scenario's scratch directory (for the loader's refusal paths).
    Derived {
        /// The guest bin the bytes come from.
        from: &'static str,
        /// Turns the valid image into the one to boot; see [`elf_mutations`].
        mutate: fn(Vec<u8>) -> Vec<u8>,
        /// File name of the derived image (the module string starts with its path).
        file_name: &'static str,
    },
}

impl Image {
    /// The guest bin this image is built from.
    pub const fn guest(&self) -> &'static str {
        match *self {
            Image::Guest(bin) => bin,
            Image::Derived { from, .. } => from,
        }
    }
}

/// One multiboot module: an image plus its module parameters.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// The module's image.
    pub image: Image,
    /// Module parameters as hv-core reads them after the image path, e.g.
    /// `"name=hello-1 mem=16M -- lines=5"` (before `--`: for hv-core; after: the
    /// guest's own command line).
    pub args: &'static str,
}

/// One expectation on the serial log. Lines are compared by substring.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    /// Some line contains this substring.
    Line(&'static str),
    /// No line contains this substring.
    Absent(&'static str),
    /// Each substring appears, in this order: each is searched from the line after
    /// the one where the previous was first found.
    InOrder(&'static [&'static str]),
    /// Exactly this many lines contain the substring.
    Count(&'static str, usize),
    /// xtask kills QEMU with SIGKILL (as `kill -9`) as soon as a line
    /// contains this substring, and the run must end that way: the line
    /// appears and QEMU does not exit by itself first (the exit status is
    /// then not checked). At most one per scenario.
    KilledAfter(&'static str),
    /// A measured number lies in `[min, max]`: the decimal number right after
    /// `key` in the first line containing `line`, divided (when `per` is
    /// given) by the number after `per.1` in the first line containing
    /// `per.0`.
    Number {
        line: &'static str,
        key: &'static str,
        per: Option<(&'static str, &'static str)>,
        min: f64,
        max: f64,
    },
}

/// A raw disk image created fresh in the scenario's scratch directory before
/// each boot (zeros, or a FAT volume the host makes: [`DiskContent`]) and,
/// for a FAT volume, checked by the host after QEMU exits; never committed.
#[derive(Clone, Copy, Debug)]
pub struct Disk {
    /// File name inside the scratch directory (`[A-Za-z0-9._-]`).
    pub file_name: &'static str,
    /// Size in MiB.
    pub size_mib: u32,
    /// What it holds at boot, and what the host checks afterwards.
    pub content: DiskContent,
}

/// Placeholder in [`Scenario::qemu_args`] for the scratch directory.
pub const SCRATCH: &str = "{scratch}";
/// Stands for a free host TCP port in [`Scenario::qemu_args`] (for QEMU's
/// `hostfwd`) and in [`Module::args`] (a guest told where the host listens,
/// as 10.0.2.2:PORT on QEMU's user network); xtask picks one per boot,
/// the same everywhere, and hands it to the scenario's host driver.
pub const HOST_PORT: &str = "{host_port}";

/// One QEMU boot: hv-core, its command line, its modules, and what must happen.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Unique name, used on the command line and for `target/qemu/<name>.log`.
    pub name: &'static str,
    /// One sentence: what the scenario shows.
    pub about: &'static str,
    /// Which command runs it.
    pub kind: Kind,
    /// hv-core's command line (QEMU `-append`).
    pub hv_cmdline: &'static str,
    /// Multiboot modules in order; module 1 is the driver domain.
    pub modules: &'static [Module],
    /// Number of vCPUs (`-smp`).
    pub smp: u32,
    /// Guest RAM in MiB (`-m`).
    pub mem_mib: u32,
    /// Extra QEMU arguments (devices, IOMMU, networks), in order. `{scratch}`
    /// stands for the scenario's scratch directory (root-relative), where the
    /// [`Disk`] images are.
    pub qemu_args: &'static [&'static str],
    /// Disk images xtask creates, zero-filled, before every boot.
    pub disks: &'static [Disk],
    /// Seconds QEMU may run before it is killed and the scenario fails.
    pub timeout_secs: u64,
    /// Expected QEMU exit status, usually `qemu_status(EXIT_POWEROFF)` (33).
    pub exit_status: i32,
    /// What the serial log must show.
    pub expect: &'static [Expect],
}

impl Scenario {
    /// The line after which xtask kills QEMU ([`Expect::KilledAfter`]).
    pub fn kill_after(&self) -> Option<&'static str> {
        self.expect.iter().find_map(|e| match *e {
            Expect::KilledAfter(line) => Some(line),
            _ => None,
        })
    }

    /// The guest bins this scenario's modules are built from, without duplicates,
    /// in first-use order.
    pub fn guests(&self) -> Vec<&'static str> {
        let mut bins: Vec<&'static str> = Vec::new();
        for module in self.modules {
            let bin = module.image.guest();
            if !bins.contains(&bin) {
                bins.push(bin);
            }
        }
        bins
    }
}

/// Every scenario, in the order `cargo xtask test` runs them.
pub fn scenarios() -> &'static [Scenario] {
    scenarios::ALL
}

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    scenarios().iter().find(|s| s.name == name)
}

/// The boots that continue `name` on the disks it leaves: every later
/// scenario with a [`DiskContent::Kept`] disk from it, then (transitively)
/// from those, in table order. `cargo xtask run` boots them right after
/// `name`, so one name runs a whole multi-boot check (`durability`).
pub fn next_boots(name: &str) -> Vec<&'static Scenario> {
    let mut chain: Vec<&str> = vec![name];
    let mut out = Vec::new();
    for s in scenarios() {
        let continues = s
            .disks
            .iter()
            .any(|d| matches!(d.content, DiskContent::Kept { from, .. } if chain.contains(&from)));
        if continues && !chain.contains(&s.name) {
            chain.push(s.name);
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_findable() {
        for (i, s) in scenarios().iter().enumerate() {
            assert!(
                scenarios()[..i].iter().all(|t| t.name != s.name),
                "duplicate scenario name {}",
                s.name
            );
            assert_eq!(find(s.name).map(|f| f.name), Some(s.name));
        }
        assert!(find("no-such-scenario").is_none());
    }

    #[test]
    fn every_scenario_starts_with_the_driver_domain() {
        for s in scenarios() {
            let first = s.modules.first().expect("scenario without modules");
            // `domctl` tests the toolstack hypercalls from a domain 0 that is
            // only that test (it gets the driver domain's capabilities).
            assert!(
                matches!(first.image, Image::Guest("driver-domain"))
                    || (s.name == "domctl" && matches!(first.image, Image::Guest("domctl-test"))),
                "{}: module 1 must be the driver domain",
                s.name
            );
            assert!(s.smp >= 1 && s.mem_mib >= 16 && s.timeout_secs > 0);
            assert!(!s.expect.is_empty(), "{}: no expectations", s.name);
        }
    }

    #[test]
    fn domain_names_are_unique_within_a_scenario() {
        // hv-core refuses a second domain with a name in use (SPEC TS-2),
        // boot modules included.
        for s in scenarios() {
            let mut names: Vec<String> = Vec::new();
            for m in s.modules {
                let params = m.args.split(" -- ").next().unwrap_or("");
                let name = params
                    .split_whitespace()
                    .find_map(|t| t.strip_prefix("name="))
                    .map(str::to_owned)
                    .unwrap_or_else(|| match m.image {
                        Image::Guest(bin) => bin.to_owned(),
                        Image::Derived { file_name, .. } => {
                            file_name.trim_end_matches(".elf").to_owned()
                        }
                    });
                assert!(
                    !names.contains(&name),
                    "{}: two domains named {name}",
                    s.name
                );
                names.push(name);
            }
        }
    }

    #[test]
    fn derived_file_names_are_unique_within_a_scenario() {
        for s in scenarios() {
            let names: Vec<&str> = s
                .modules
                .iter()
                .filter_map(|m| match m.image {
                    Image::Derived { file_name, .. } => Some(file_name),
                    Image::Guest(_) => None,
                })
                .collect();
            for (i, n) in names.iter().enumerate() {
                assert!(!names[..i].contains(n), "{}: duplicate {n}", s.name);
                assert!(
                    !n.contains(['/', ' ', ',']),
                    "{}: bad file name {n}",
                    s.name
                );
            }
        }
    }

    #[test]
    fn disks_are_named_safely_and_used() {
        for s in scenarios() {
            for (i, d) in s.disks.iter().enumerate() {
                assert!(
                    !d.file_name.is_empty()
                        && d.file_name
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
                    "{}: bad disk name {}",
                    s.name,
                    d.file_name
                );
                assert!(d.size_mib > 0);
                assert!(s.disks[..i].iter().all(|e| e.file_name != d.file_name));
                if let DiskContent::Fat(v) = &d.content {
                    assert!(!v.label.is_empty() && v.label.len() <= 11);
                    // At least 16 MiB of partition, for FAT16's cluster count.
                    assert!(v.first_sector >= 1);
                    assert!(
                        (u64::from(d.size_mib) << 11).saturating_sub(v.first_sector) >= 16 << 11,
                        "{}: FAT partition of {} too small",
                        s.name,
                        d.file_name
                    );
                    for f in v.files.iter().chain(v.expect_after) {
                        let (base, ext) = f.name.split_once('.').unwrap_or((f.name, ""));
                        assert!(
                            (1..=8).contains(&base.len()) && ext.len() <= 3,
                            "{}: {} is not an 8.3 name",
                            s.name,
                            f.name
                        );
                    }
                }
                let path = format!("{SCRATCH}/{}", d.file_name);
                assert!(
                    s.qemu_args.iter().any(|a| a.contains(&path)),
                    "{}: disk {} is never attached",
                    s.name,
                    d.file_name
                );
            }
        }
    }

    #[test]
    fn durability_runs_its_second_boot_after_the_first() {
        let s = find("durability").expect("durability");
        assert!(s.kill_after().is_some(), "boot 1 is killed after the flush");
        let next: Vec<&str> = next_boots("durability").iter().map(|s| s.name).collect();
        assert_eq!(next, ["durability-reboot"]);
        assert!(next_boots("fsdemo").is_empty());
    }

    #[test]
    fn kept_disks_come_from_an_earlier_scenario_and_kills_are_single() {
        for (i, s) in scenarios().iter().enumerate() {
            for d in s.disks {
                if let DiskContent::Kept { from, .. } = d.content {
                    let earlier = scenarios()[..i].iter().find(|e| e.name == from);
                    let earlier = earlier
                        .unwrap_or_else(|| panic!("{}: {from} is not an earlier scenario", s.name));
                    assert!(
                        earlier.disks.iter().any(|e| e.file_name == d.file_name),
                        "{}: {from} has no disk {}",
                        s.name,
                        d.file_name
                    );
                    assert!(earlier.kind.in_test_suite() == s.kind.in_test_suite());
                }
            }
            let kills = s
                .expect
                .iter()
                .filter(|e| matches!(e, Expect::KilledAfter(_)))
                .count();
            assert!(kills <= 1, "{}: more than one KilledAfter", s.name);
        }
    }

    #[test]
    fn demo_is_in_the_test_suite_and_bench_is_not() {
        assert!(find("demo").is_some_and(|s| s.kind == Kind::Demo));
        assert!(Kind::Demo.in_test_suite() && Kind::Test.in_test_suite());
        assert!(!Kind::Bench.in_test_suite());
    }

    #[test]
    fn guests_are_deduplicated_in_order() {
        let s = find("demo").expect("demo");
        assert_eq!(s.guests(), ["driver-domain", "web", "fsdemo"]);
        let s = find("bad-modules").expect("bad-modules");
        assert_eq!(s.guests(), ["driver-domain", "hello"]);
    }
}
