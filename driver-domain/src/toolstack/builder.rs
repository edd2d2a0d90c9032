//! The run-time domain builder: a `CREATE` request turned into a running
//! domain — check the devices, then create → populate → build (hv-core's own
//! loader and builder, TS-1) → device records → unpause. Any failure undoes
//! what was made (records removed, the domain destroyed) and becomes one
//! line for `pvctl`: nothing is left half-created.
//!
//! Time is measured with the TSC: `hypervisor` is the time inside the
//! domain-building hypercalls, `toolstack` the rest of the request.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use hypercall_abi::mgmt::{name_str, CreateRequest, DiskSpec, VIEW_GPT, VIEW_LBA, VIEW_WHOLE};
use hypercall_abi::{DomId, Errno};
use pv_guest_kit::bench::rdtsc;
use pv_guest_kit::toolstack::{self as ts, NewDomain};

use crate::backend::{config, Backends};

/// What a successful build made.
#[derive(Debug)]
pub struct Built {
    pub domid: DomId,
    pub records: Vec<u32>,
    /// TSC when the request started.
    pub start_tsc: u64,
    /// TSC cycles inside the domain-building hypercalls.
    pub hv_cycles: u64,
    /// TSC cycles of the whole request.
    pub total_cycles: u64,
}

/// A failure: the errno behind it and one line.
pub type Failure = (Errno, String);

fn view_of(d: &DiskSpec) -> Result<config::View, String> {
    match d.view {
        VIEW_WHOLE => Ok(config::View::Whole),
        VIEW_GPT => u32::try_from(d.first)
            .ok()
            .filter(|&n| n >= 1)
            .map(config::View::Gpt)
            .ok_or_else(|| format!("disk gpt:{}: bad partition number", d.first)),
        VIEW_LBA if d.count > 0 && d.first.checked_add(d.count).is_some() => {
            Ok(config::View::Lba {
                first: d.first,
                count: d.count,
            })
        }
        _ => Err(String::from("disk: unknown view")),
    }
}

/// How a disk spec reads (as pvctl's config writes it).
pub fn disk_text(d: &DiskSpec) -> String {
    let view = match d.view {
        VIEW_WHOLE => String::from("whole"),
        VIEW_GPT => format!("gpt:{}", d.first),
        VIEW_LBA => format!("lba:{}+{}", d.first, d.count),
        other => format!("view {other}"),
    };
    if d.readonly != 0 {
        view + ":ro"
    } else {
        view
    }
}

/// Free memory in MiB, for messages.
fn free_mib() -> u64 {
    ts::physinfo().map_or(0, |p| p.free_pages / 256)
}

/// Runs `op`, adding its TSC cycles to `hv`.
fn timed<T>(hv: &mut u64, op: impl FnOnce() -> T) -> T {
    let start = rdtsc();
    let result = op();
    *hv += rdtsc().wrapping_sub(start);
    result
}

/// Builds the domain `req` asks for from `image`; `start_tsc` is when the
/// request arrived.
pub fn build(
    backends: &mut Backends,
    req: &CreateRequest<'_>,
    image: &[u8],
    start_tsc: u64,
) -> Result<Built, Failure> {
    let name = name_str(&req.fixed.name).unwrap_or("");
    let mib = req.fixed.max_pages / 256;
    // Devices first: a disk that does not exist fails before anything is made.
    let mut views = Vec::new();
    for i in 0..req.nr_disks() {
        let Some(d) = req.disk(i) else { continue };
        let view = view_of(&d).map_err(|e| (Errno::EINVAL, e))?;
        let resolved = backends
            .resolve_view(view)
            .map_err(|why| (Errno::ENOENT, format!("disk {}: {why}", disk_text(&d))))?;
        views.push((resolved, d.readonly != 0));
    }
    let mut macs = Vec::new();
    for i in 0..req.nr_nics() {
        let Some(n) = req.nic(i) else { continue };
        let mut mac = [0u8; 6];
        mac.copy_from_slice(&n.mac[..6]);
        if config::parse_mac(&format_mac(&mac)).is_none() || n.mac[6..] != [0, 0] {
            return Err((
                Errno::EINVAL,
                format!("nic {}: not a unicast MAC", format_mac(&mac)),
            ));
        }
        macs.push(mac);
    }
    let mut hv = 0u64;
    let new = NewDomain {
        name,
        max_pages: req.fixed.max_pages,
        vcpus: req.fixed.vcpus,
        weight: req.fixed.weight,
        cap_percent: req.fixed.cap_percent,
    };
    let domid = timed(&mut hv, || ts::domain_create(&new)).map_err(|e| {
        let line = match e {
            Errno::EEXIST => format!("a domain named `{name}` already exists"),
            Errno::ENOMEM => format!(
                "not enough free memory: {mib} MiB asked, {} MiB free",
                free_mib()
            ),
            Errno::EINVAL => format!(
                "bad domain parameters (name `{name}`, {} vCPUs, weight {}, cap {}%)",
                req.fixed.vcpus, req.fixed.weight, req.fixed.cap_percent
            ),
            other => format!("cannot create the domain: {other}"),
        };
        (e, line)
    })?;
    let mut records = Vec::new();
    let result = (|| -> Result<(), Failure> {
        timed(&mut hv, || ts::domain_populate(domid, req.fixed.max_pages)).map_err(|e| {
            let line = match e {
                Errno::ENOMEM => format!(
                    "not enough free memory: {mib} MiB asked, {} MiB free",
                    free_mib()
                ),
                other => format!("cannot give the domain its memory: {other}"),
            };
            (e, line)
        })?;
        let mut err = [0u8; 160];
        timed(&mut hv, || {
            ts::domain_build(domid, image, req.cmdline, &mut err)
        })
        .map_err(|(e, n)| {
            let why = core::str::from_utf8(&err[..n]).unwrap_or("(reason not UTF-8)");
            let why = if why.is_empty() { "refused" } else { why };
            (e, format!("image refused: {why}"))
        })?;
        for (i, (view, readonly)) in views.into_iter().enumerate() {
            let id = backends
                .add_disk(domid, view, readonly, i as u32)
                .map_err(|e| (e, format!("cannot make disk {i}'s record: {e}")))?;
            records.push(id);
        }
        for mac in macs {
            let id = backends.add_nic(domid, mac).map_err(|e| {
                (
                    e,
                    format!("cannot make the record of nic {}: {e}", format_mac(&mac)),
                )
            })?;
            records.push(id);
        }
        timed(&mut hv, || ts::domain_unpause(domid))
            .map_err(|e| (e, format!("cannot unpause the domain: {e}")))?;
        Ok(())
    })();
    match result {
        Ok(()) => Ok(Built {
            domid,
            records,
            start_tsc,
            hv_cycles: hv,
            total_cycles: rdtsc().wrapping_sub(start_tsc),
        }),
        Err(failure) => {
            for id in records {
                backends.remove_record(id);
            }
            if let Err(e) = ts::domain_destroy(domid) {
                pv_guest_kit::println!("toolstack: cannot destroy half-made d{domid}: {e}");
            }
            Err(failure)
        }
    }
}

/// `02:00:00:00:00:01`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_views_read_back() {
        let d = DiskSpec {
            view: VIEW_LBA,
            readonly: 1,
            first: 4096,
            count: 2048,
        };
        assert_eq!(disk_text(&d), "lba:4096+2048:ro");
        assert_eq!(
            view_of(&d),
            Ok(config::View::Lba {
                first: 4096,
                count: 2048
            })
        );
        let g = DiskSpec {
            view: VIEW_GPT,
            first: 0,
            ..DiskSpec::default()
        };
        assert!(view_of(&g).is_err());
        assert_eq!(format_mac(&[2, 0, 0, 0, 0, 0xab]), "02:00:00:00:00:ab");
    }
}
