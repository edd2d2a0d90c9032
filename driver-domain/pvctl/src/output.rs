//! What `pvctl` prints: the replies turned into rows ([`DomainRow`],
//! [`HostInfo`]), shown as aligned tables for people or JSON for scripts.

use hypercall_abi::mgmt::{
    name_str, DomainEntry, InfoReply, IOMMU_AMDVI, IOMMU_NONE, IOMMU_VTD, STATE_CRASHED,
    STATE_PAUSED, STATE_RUNNING, STATE_SHUTDOWN,
};
use serde::Serialize;

/// One domain, as `list` and `top` show it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DomainRow {
    pub id: u32,
    pub name: String,
    pub state: &'static str,
    pub vcpus: u32,
    pub memory_kib: u64,
    pub max_memory_kib: u64,
    pub cpu_ns: u64,
    pub event_channels: u32,
    pub grants: u32,
    pub console_bytes: u64,
    /// Created by the toolstack (not a boot-time domain).
    pub managed: bool,
    /// CPU use since the previous sample, percent of one CPU (`top` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
}

/// The name of a `STATE_*`.
pub fn state_name(state: u32) -> &'static str {
    match state {
        STATE_RUNNING => "running",
        STATE_SHUTDOWN => "shutdown",
        STATE_CRASHED => "crashed",
        STATE_PAUSED => "paused",
        _ => "unknown",
    }
}

impl DomainRow {
    /// A row from a `LIST` entry.
    pub fn from_entry(e: &DomainEntry) -> Self {
        Self {
            id: e.domid,
            name: name_str(&e.name).unwrap_or("?").to_owned(),
            state: state_name(e.state),
            vcpus: e.nr_vcpus,
            memory_kib: e.nr_pages * 4,
            max_memory_kib: e.max_pages * 4,
            cpu_ns: e.cpu_ns,
            event_channels: e.evtchn_ports,
            grants: e.grant_entries,
            console_bytes: e.console_bytes,
            managed: e.managed != 0,
            cpu_percent: None,
        }
    }
}

/// Rows of `now` with CPU percentages against `before` (`elapsed_ns` apart).
pub fn with_rates(before: &[DomainRow], now: &[DomainRow], elapsed_ns: u64) -> Vec<DomainRow> {
    now.iter()
        .map(|row| {
            let prev = before.iter().find(|b| b.id == row.id && b.name == row.name);
            let percent = prev.filter(|_| elapsed_ns > 0).map(|p| {
                let used = row.cpu_ns.saturating_sub(p.cpu_ns) as f64;
                (used * 100.0 / elapsed_ns as f64 * 10.0).round() / 10.0
            });
            DomainRow {
                cpu_percent: percent,
                ..row.clone()
            }
        })
        .collect()
}

/// Pads `cells` into columns (left-aligned first column, right-aligned numbers).
fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    let all = std::iter::once(header.iter().map(|h| h.to_string()).collect::<Vec<_>>())
        .chain(rows.iter().cloned());
    for row in all {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if right[i] {
                    format!("{cell:>w$}", w = widths[i])
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// The `list` table.
pub fn list_table(rows: &[DomainRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.name.clone(),
                r.state.to_owned(),
                r.vcpus.to_string(),
                mib(r.memory_kib),
                format!("{:.3}", r.cpu_ns as f64 / 1e9),
                r.event_channels.to_string(),
                r.grants.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "NAME", "STATE", "VCPUS", "MEM(MiB)", "CPU(s)", "EVTCHN", "GRANTS",
        ],
        &cells,
        &[true, false, false, true, true, true, true, true],
    )
}

/// The `top` table.
pub fn top_table(rows: &[DomainRow], info: &HostInfo) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.name.clone(),
                r.state.to_owned(),
                r.cpu_percent
                    .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}")),
                format!("{:.3}", r.cpu_ns as f64 / 1e9),
                mib(r.memory_kib),
                mib(r.max_memory_kib),
                r.vcpus.to_string(),
            ]
        })
        .collect();
    let head = format!(
        "{} domains, {} CPUs, memory {} MiB total, {} MiB free\n",
        rows.len(),
        info.cpus,
        mib(info.total_kib),
        mib(info.free_kib)
    );
    head + &table(
        &[
            "ID", "NAME", "STATE", "CPU%", "CPU(s)", "MEM(MiB)", "MAX(MiB)", "VCPUS",
        ],
        &cells,
        &[true, false, false, true, true, true, true, true],
    )
}

/// What `info` shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostInfo {
    pub hypervisor: String,
    pub abi: String,
    pub cpus: u32,
    pub iommu: &'static str,
    pub total_kib: u64,
    pub free_kib: u64,
    pub free_pages: u64,
    pub tsc_hz: u64,
    pub domains: u32,
    pub management_protocol: u32,
}

impl HostInfo {
    /// From an `INFO` reply.
    pub fn from_reply(r: &InfoReply, protocol: u32) -> Self {
        Self {
            hypervisor: name_str(&r.hv_version).unwrap_or("?").to_owned(),
            abi: format!("{}.{}", r.abi_major, r.abi_minor),
            cpus: r.nr_cpus,
            iommu: match r.iommu {
                IOMMU_NONE => "none",
                IOMMU_VTD => "Intel VT-d",
                IOMMU_AMDVI => "AMD-Vi",
                _ => "unknown",
            },
            total_kib: r.total_pages * 4,
            free_kib: r.free_pages * 4,
            free_pages: r.free_pages,
            tsc_hz: r.tsc_hz,
            domains: r.nr_domains,
            management_protocol: protocol,
        }
    }

    /// The `info` text.
    pub fn text(&self) -> String {
        format!(
            "hypervisor:   {}\nABI:          {}\nCPUs:         {}\nIOMMU:        {}\nmemory:       {} MiB total, {} MiB free ({} pages)\nTSC:          {:.3} GHz\ndomains:      {}\nmanagement:   protocol {}\n",
            self.hypervisor,
            self.abi,
            self.cpus,
            self.iommu,
            mib(self.total_kib),
            mib(self.free_kib),
            self.free_pages,
            self.tsc_hz as f64 / 1e9,
            self.domains,
            self.management_protocol
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hypercall_abi::mgmt::name_field;

    fn entry(domid: u32, name: &str, cpu_ns: u64) -> DomainEntry {
        DomainEntry {
            domid,
            state: STATE_RUNNING,
            nr_vcpus: 1,
            nr_pages: 1024,
            max_pages: 1024,
            cpu_ns,
            name: name_field(name).expect("name"),
            ..DomainEntry::default()
        }
    }

    #[test]
    fn list_is_an_aligned_table() {
        let rows: Vec<DomainRow> = [
            entry(0, "driver", 1_500_000_000),
            entry(12, "tiny-12", 2_000_000),
        ]
        .iter()
        .map(DomainRow::from_entry)
        .collect();
        let text = list_table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "ID  NAME     STATE    VCPUS  MEM(MiB)  CPU(s)  EVTCHN  GRANTS"
        );
        assert_eq!(
            lines[1],
            " 0  driver   running      1       4.0   1.500       0       0"
        );
        assert_eq!(
            lines[2],
            "12  tiny-12  running      1       4.0   0.002       0       0"
        );
    }

    #[test]
    fn top_computes_cpu_percent_per_domain() {
        let before = vec![DomainRow::from_entry(&entry(3, "a", 1_000_000))];
        let now = vec![
            DomainRow::from_entry(&entry(3, "a", 251_000_000)),
            DomainRow::from_entry(&entry(4, "b", 7)),
        ];
        let rows = with_rates(&before, &now, 1_000_000_000);
        assert_eq!(rows[0].cpu_percent, Some(25.0));
        assert_eq!(rows[1].cpu_percent, None);
        let json = serde_json::to_string(&rows[0]).expect("json");
        assert!(json.contains("\"cpu_percent\":25.0"), "{json}");
        let json = serde_json::to_string(&rows[1]).expect("json");
        assert!(!json.contains("cpu_percent"), "{json}");
    }

    #[test]
    fn info_text_and_json() {
        let reply = InfoReply {
            abi_major: 0,
            abi_minor: 6,
            nr_cpus: 2,
            iommu: IOMMU_VTD,
            total_pages: 65536,
            free_pages: 32768,
            tsc_hz: 2_600_000_000,
            nr_domains: 3,
            hv_version: name_field("paravane 0.1.0").expect("v"),
            ..InfoReply::default()
        };
        let info = HostInfo::from_reply(&reply, 1);
        let text = info.text();
        assert!(text.contains("ABI:          0.6\n"), "{text}");
        assert!(text.contains("IOMMU:        Intel VT-d\n"), "{text}");
        assert!(
            text.contains("memory:       256.0 MiB total, 128.0 MiB free (32768 pages)"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::to_value(&info).expect("json");
        assert_eq!(json["free_pages"], 32768);
        assert_eq!(json["iommu"], "Intel VT-d");
    }
}
