//! The toolstack's device configuration for boot-time guests (SPEC.md
//! DEV-6), from the driver domain's own command line:
//!
//! - `disk=<MiB>`: size of the RAM disk (default 16, at most 256);
//!   `disk=virtio-blk` or `disk=nvme` instead serves the `blk=` views from
//!   the driver domain's own virtio-blk or NVMe disk (since ABI 0.5);
//! - `seed=gpt-fat`: lay a GPT on the RAM disk whose partition 1 holds a
//!   small MBR-partitioned disk with a FAT16 volume (a stand-in for a
//!   host-made image until real disks arrive);
//! - `blk=<frontend domid>:<view>[:ro]`, repeatable, with `<view>` one of
//!   `whole`, `gpt:<n>` (partition `n`, from 1) or `lba:<first>+<count>`
//!   (512-byte units);
//! - `net=<frontend domid>:<mac>`, repeatable, `<mac>` as `02:00:00:00:00:01`;
//! - `foreign-blk=<backend domid>:<frontend domid>:<units>` and
//!   `foreign-net=<backend domid>:<frontend domid>:<mac>`, repeatable: records
//!   this domain creates for another backend domain and does not serve (a
//!   test guest acting as a backend, SPEC DEV-6).
//! - `nic=virtio-net`: put the driver domain's own virtio-net NIC on the
//!   vifs' bridge as its uplink port, so guests reach the outside (NET-4).
//!
//! Parsing is pure and host-tested; a bad token is reported, not fatal.

use alloc::vec::Vec;

use hypercall_abi::DomId;

/// Largest RAM disk, MiB.
pub const MAX_DISK_MIB: u64 = 256;

/// Which part of the RAM disk a guest gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// All of it.
    Whole,
    /// GPT partition `n` (1-based).
    Gpt(u32),
    /// `count` units from `first`.
    Lba { first: u64, count: u64 },
}

/// A real disk the `blk=` views are cut from instead of the RAM disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskDevice {
    /// The first virtio-blk device assigned to this domain.
    VirtioBlk,
    /// The first NVMe controller's namespace 1.
    Nvme,
}

/// A physical NIC the bridge holds as its uplink (`nic=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicDevice {
    /// The first virtio-net device assigned to this domain.
    VirtioNet,
}

/// One `blk=` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlkConfig {
    pub frontend: DomId,
    pub view: View,
    pub readonly: bool,
}

/// One `net=` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    pub frontend: DomId,
    pub mac: [u8; 6],
}

/// What a `foreign-*=` record configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForeignDevice {
    /// A block device of `units` 512-byte units.
    Blk { units: u64 },
    /// A vif with this MAC.
    Net { mac: [u8; 6] },
}

/// One `foreign-blk=` / `foreign-net=` entry: a record another domain backs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignConfig {
    pub backend: DomId,
    pub frontend: DomId,
    pub device: ForeignDevice,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub disk_mib: u64,
    /// `Some` when the views come from a real disk (`disk=virtio-blk|nvme`).
    pub device: Option<DiskDevice>,
    pub seed: bool,
    pub blk: Vec<BlkConfig>,
    pub net: Vec<NetConfig>,
    pub foreign: Vec<ForeignConfig>,
    /// `Some` when the bridge holds a physical NIC (`nic=virtio-net`).
    pub nic: Option<NicDevice>,
}

fn number(text: &str) -> Option<u64> {
    pv_guest_kit::cmdline::parse_u64(text)
}

fn parse_view(text: &str) -> Option<View> {
    if text == "whole" {
        return Some(View::Whole);
    }
    if let Some(n) = text.strip_prefix("gpt:") {
        let n = u32::try_from(number(n)?).ok()?;
        return (n >= 1).then_some(View::Gpt(n));
    }
    let range = text.strip_prefix("lba:")?;
    let (first, count) = range.split_once('+')?;
    let (first, count) = (number(first)?, number(count)?);
    (count > 0 && first.checked_add(count).is_some()).then_some(View::Lba { first, count })
}

fn parse_blk(value: &str) -> Option<BlkConfig> {
    let (front, rest) = value.split_once(':')?;
    let frontend = DomId::try_from(number(front)?).ok()?;
    let (view, readonly) = match rest.strip_suffix(":ro") {
        Some(view) => (view, true),
        None => (rest, false),
    };
    Some(BlkConfig {
        frontend,
        view: parse_view(view)?,
        readonly,
    })
}

/// Parses `02:00:00:00:00:01`; refuses multicast and all-zero addresses.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    if parts.next().is_some() || mac[0] & 1 != 0 || mac == [0; 6] {
        return None;
    }
    Some(mac)
}

fn parse_net(value: &str) -> Option<NetConfig> {
    let (front, mac) = value.split_once(':')?;
    Some(NetConfig {
        frontend: DomId::try_from(number(front)?).ok()?,
        mac: parse_mac(mac)?,
    })
}

/// Parses `<backend>:<frontend>:<rest>` of a `foreign-*=` value.
fn parse_foreign(value: &str, net: bool) -> Option<ForeignConfig> {
    let (backend, rest) = value.split_once(':')?;
    let (frontend, rest) = rest.split_once(':')?;
    let backend = DomId::try_from(number(backend)?).ok()?;
    let frontend = DomId::try_from(number(frontend)?).ok()?;
    let device = if net {
        ForeignDevice::Net {
            mac: parse_mac(rest)?,
        }
    } else {
        let units = number(rest)?;
        if units == 0 {
            return None;
        }
        ForeignDevice::Blk { units }
    };
    (backend != frontend).then_some(ForeignConfig {
        backend,
        frontend,
        device,
    })
}

/// Parses the command line; returns the configuration and the tokens it refused.
pub fn parse(line: &str) -> (Config, Vec<&str>) {
    let mut config = Config {
        disk_mib: 16,
        ..Config::default()
    };
    let mut refused = Vec::new();
    for token in line.split_ascii_whitespace() {
        let (key, value) = token.split_once('=').unwrap_or((token, ""));
        let ok = match key {
            "disk" => match (value, number(value)) {
                ("virtio-blk", _) => {
                    config.device = Some(DiskDevice::VirtioBlk);
                    true
                }
                ("nvme", _) => {
                    config.device = Some(DiskDevice::Nvme);
                    true
                }
                (_, Some(mib)) if (1..=MAX_DISK_MIB).contains(&mib) => {
                    config.disk_mib = mib;
                    config.device = None;
                    true
                }
                _ => false,
            },
            "seed" => {
                config.seed = value == "gpt-fat";
                config.seed
            }
            "blk" => parse_blk(value).map(|b| config.blk.push(b)).is_some(),
            "net" => parse_net(value).map(|n| config.net.push(n)).is_some(),
            "foreign-blk" => parse_foreign(value, false)
                .map(|f| config.foreign.push(f))
                .is_some(),
            "foreign-net" => parse_foreign(value, true)
                .map(|f| config.foreign.push(f))
                .is_some(),
            "nic" => match value {
                "virtio-net" => {
                    config.nic = Some(NicDevice::VirtioNet);
                    true
                }
                _ => false,
            },
            // Other keys belong to other parts of the driver domain.
            _ => true,
        };
        if !ok {
            refused.push(token);
        }
    }
    (config, refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        let (c, refused) = parse(
            "disk=32 seed=gpt-fat blk=1:gpt:1 blk=2:lba:100+50:ro blk=3:whole \
             net=4:02:00:00:00:00:04 other=1",
        );
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(c.disk_mib, 32);
        assert_eq!(c.device, None);
        assert!(c.seed);
        assert_eq!(
            c.blk,
            [
                BlkConfig {
                    frontend: 1,
                    view: View::Gpt(1),
                    readonly: false
                },
                BlkConfig {
                    frontend: 2,
                    view: View::Lba {
                        first: 100,
                        count: 50
                    },
                    readonly: true
                },
                BlkConfig {
                    frontend: 3,
                    view: View::Whole,
                    readonly: false
                },
            ]
        );
        assert_eq!(
            c.net,
            [NetConfig {
                frontend: 4,
                mac: [2, 0, 0, 0, 0, 4]
            }]
        );
    }

    #[test]
    fn refuses_bad_tokens() {
        let (c, refused) = parse(
            "disk=0 blk=1:gpt:0 blk=x:whole blk=1:lba:5+0 blk=1:lba:18446744073709551615+2 \
             net=1:01:00:00:00:00:01 net=1:00:00:00:00:00:00 net=1:02:00 seed=zip",
        );
        assert_eq!(refused.len(), 9);
        assert!(c.blk.is_empty() && c.net.is_empty());
        assert_eq!(c.disk_mib, 16);
        assert_eq!(parse("disk=virtio").1, ["disk=virtio"]);
        assert_eq!(parse("disk=sata").0.device, None);
    }

    #[test]
    fn parses_foreign_records() {
        let (c, refused) = parse(
            "foreign-blk=4:3:64 foreign-net=4:3:02:00:00:00:00:09 foreign-blk=3:3:8 \
             foreign-blk=4:3:0 foreign-net=4:3:01:00:00:00:00:01 foreign-blk=4",
        );
        assert_eq!(refused.len(), 4, "{refused:?}");
        assert_eq!(
            c.foreign,
            [
                ForeignConfig {
                    backend: 4,
                    frontend: 3,
                    device: ForeignDevice::Blk { units: 64 }
                },
                ForeignConfig {
                    backend: 4,
                    frontend: 3,
                    device: ForeignDevice::Net {
                        mac: [2, 0, 0, 0, 0, 9]
                    }
                },
            ]
        );
        assert!(c.blk.is_empty() && c.net.is_empty());
    }

    #[test]
    fn selects_a_real_disk() {
        let (c, refused) = parse("devices=1 disk=virtio-blk blk=1:whole");
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(c.device, Some(DiskDevice::VirtioBlk));
        assert_eq!(c.blk.len(), 1);
        assert_eq!(parse("disk=nvme").0.device, Some(DiskDevice::Nvme));
        // The last `disk=` wins.
        let (c, _) = parse("disk=nvme disk=8");
        assert_eq!((c.device, c.disk_mib), (None, 8));
    }

    #[test]
    fn selects_the_uplink_nic() {
        let (c, refused) = parse("nic=virtio-net net=1:02:00:00:00:00:01");
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(c.nic, Some(NicDevice::VirtioNet));
        assert_eq!(parse("net=1:02:00:00:00:00:01").0.nic, None);
        let (c, refused) = parse("nic=e1000 nic=");
        assert_eq!(refused, ["nic=e1000", "nic="]);
        assert_eq!(c.nic, None);
    }
}
