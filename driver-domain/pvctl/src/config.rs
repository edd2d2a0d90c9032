//! Domain configurations: the TOML file `pvctl create CONFIG` reads (in the
//! spirit of xl.cfg) and the `--image/--mem/...` flags, both turned into one
//! checked [`DomainSpec`].
//!
//! ```toml
//! name    = "web-1"
//! image   = "web.elf"        # relative to the config file
//! memory  = 8                # MiB
//! vcpus   = 1
//! weight  = 256              # scheduler weight (default 256)
//! cap     = 0                # CPU cap in percent, 0 = none
//! disk    = ["gpt:1", "lba:4096+2048:ro"]   # views of the driver domain's disk
//! nic     = ["02:00:00:00:00:10"]
//! cmdline = "greeting=web"
//! ```
//!
//! Unknown keys are errors. Every error is one line.

use std::path::{Path, PathBuf};

use hypercall_abi::mgmt::{
    name_field, DiskSpec, NicSpec, MAX_CMDLINE, MAX_DISKS, MAX_NICS, VIEW_GPT, VIEW_LBA, VIEW_WHOLE,
};
use serde::Deserialize;

/// Keys a config file may have.
pub const KEYS: &[&str] = &[
    "name", "image", "memory", "vcpus", "weight", "cap", "disk", "nic", "cmdline",
];

/// A config file as written.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub name: Option<String>,
    pub image: Option<String>,
    pub memory: Option<u64>,
    pub vcpus: Option<u32>,
    pub weight: Option<u32>,
    pub cap: Option<u32>,
    #[serde(default)]
    pub disk: Vec<String>,
    #[serde(default)]
    pub nic: Vec<String>,
    pub cmdline: Option<String>,
}

/// What to create, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainSpec {
    pub name: String,
    pub image: PathBuf,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub weight: u32,
    pub cap: u32,
    pub disks: Vec<DiskSpec>,
    pub nics: Vec<NicSpec>,
    pub cmdline: String,
}

/// Parses `text` (the contents of `path`, for messages and relative images).
pub fn parse_file(text: &str, path: &Path) -> Result<ConfigFile, String> {
    toml::from_str::<ConfigFile>(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let message = e.message().trim().replace('\n', " ");
        let message = match message.strip_prefix("unknown field ") {
            Some(rest) => format!(
                "unknown key {} (known keys: {})",
                rest.split(',').next().unwrap_or(rest),
                KEYS.join(", ")
            ),
            None => message,
        };
        match line {
            Some(n) => format!("{}:{n}: {message}", path.display()),
            None => format!("{}: {message}", path.display()),
        }
    })
}

/// Overrides from the command line (each wins over the file).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub image: Option<PathBuf>,
    pub memory_mib: Option<u64>,
    pub vcpus: Option<u32>,
    pub disks: Vec<String>,
    pub nics: Vec<String>,
    pub cmdline: Option<String>,
}

/// Merges a config file (if any, read from `path`) with the overrides and checks the result.
pub fn resolve(file: Option<(&ConfigFile, &Path)>, over: &Overrides) -> Result<DomainSpec, String> {
    let empty = ConfigFile::default();
    let (cfg, base) = match file {
        Some((cfg, path)) => (cfg, path.parent().map(Path::to_path_buf)),
        None => (&empty, None),
    };
    let name = over
        .name
        .clone()
        .or_else(|| cfg.name.clone())
        .ok_or("no name: give `name` in the config or --name")?;
    check_name(&name)?;
    let image = match (&over.image, &cfg.image) {
        (Some(p), _) => p.clone(),
        (None, Some(p)) => match &base {
            Some(dir) if Path::new(p).is_relative() => dir.join(p),
            _ => PathBuf::from(p),
        },
        (None, None) => return Err("no image: give `image` in the config or --image".into()),
    };
    let memory_mib = over.memory_mib.or(cfg.memory).unwrap_or(16);
    if memory_mib == 0 || memory_mib > (1 << 20) {
        return Err(format!(
            "memory = {memory_mib} MiB is out of range (1..1048576)"
        ));
    }
    let vcpus = over.vcpus.or(cfg.vcpus).unwrap_or(1);
    if !(1..=32).contains(&vcpus) {
        return Err(format!("vcpus = {vcpus} is out of range (1..32)"));
    }
    let weight = cfg.weight.unwrap_or(0);
    if weight > 65535 {
        return Err(format!("weight = {weight} is out of range (1..65535)"));
    }
    let cap = cfg.cap.unwrap_or(0);
    if cap > 100 {
        return Err(format!("cap = {cap} is out of range (0..100 percent)"));
    }
    let disk_texts = if over.disks.is_empty() {
        &cfg.disk
    } else {
        &over.disks
    };
    let nic_texts = if over.nics.is_empty() {
        &cfg.nic
    } else {
        &over.nics
    };
    if disk_texts.len() > MAX_DISKS || nic_texts.len() > MAX_NICS {
        return Err(format!("at most {MAX_DISKS} disks and {MAX_NICS} nics"));
    }
    let disks = disk_texts
        .iter()
        .map(|d| parse_disk(d))
        .collect::<Result<Vec<_>, _>>()?;
    let nics = nic_texts
        .iter()
        .map(|n| parse_mac(n).map(|mac| NicSpec { mac }))
        .collect::<Result<Vec<_>, _>>()?;
    let cmdline = over
        .cmdline
        .clone()
        .or_else(|| cfg.cmdline.clone())
        .unwrap_or_default();
    if cmdline.len() > MAX_CMDLINE || cmdline.contains('\0') {
        return Err(format!(
            "cmdline longer than {MAX_CMDLINE} bytes or with a NUL"
        ));
    }
    Ok(DomainSpec {
        name,
        image,
        memory_mib,
        vcpus,
        weight,
        cap,
        disks,
        nics,
        cmdline,
    })
}

/// 1..31 bytes of `[A-Za-z0-9._-]`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name_field(name).is_some()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "bad name `{name}`: 1 to 31 characters of A-Z a-z 0-9 . _ -"
        ))
    }
}

fn number(text: &str) -> Option<u64> {
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// A disk: `whole`, `gpt:<n>` or `lba:<first>+<count>`, then `:ro` for read-only.
pub fn parse_disk(text: &str) -> Result<DiskSpec, String> {
    let bad = || {
        format!("bad disk `{text}`: use whole, gpt:<n> or lba:<first>+<count>, optionally with :ro")
    };
    let (view, readonly) = match text.strip_suffix(":ro") {
        Some(v) => (v, 1),
        None => (text, 0),
    };
    let mut spec = DiskSpec {
        readonly,
        ..DiskSpec::default()
    };
    if view == "whole" {
        spec.view = VIEW_WHOLE;
    } else if let Some(n) = view.strip_prefix("gpt:") {
        spec.view = VIEW_GPT;
        spec.first = number(n)
            .filter(|&n| (1..=128).contains(&n))
            .ok_or_else(bad)?;
    } else if let Some(range) = view.strip_prefix("lba:") {
        let (first, count) = range.split_once('+').ok_or_else(bad)?;
        spec.view = VIEW_LBA;
        spec.first = number(first).ok_or_else(bad)?;
        spec.count = number(count).filter(|&c| c > 0).ok_or_else(bad)?;
        spec.first.checked_add(spec.count).ok_or_else(bad)?;
    } else {
        return Err(bad());
    }
    Ok(spec)
}

/// How a disk spec reads back.
pub fn disk_text(d: &DiskSpec) -> String {
    let view = match d.view {
        VIEW_WHOLE => "whole".to_owned(),
        VIEW_GPT => format!("gpt:{}", d.first),
        VIEW_LBA => format!("lba:{}+{}", d.first, d.count),
        other => format!("view{other}"),
    };
    if d.readonly != 0 {
        format!("{view}:ro")
    } else {
        view
    }
}

/// A unicast, non-zero MAC like `02:00:00:00:00:01`.
pub fn parse_mac(text: &str) -> Result<[u8; 8], String> {
    let bad = || format!("bad nic `{text}`: a unicast MAC like 02:00:00:00:00:01");
    let mut mac = [0u8; 8];
    let parts: Vec<&str> = text.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    for (byte, part) in mac.iter_mut().zip(&parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 != 0 || mac[..6] == [0; 6] {
        return Err(bad());
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
name = "web-1"
image = "web.elf"
memory = 8
vcpus = 2
weight = 512
cap = 50
disk = ["gpt:1", "lba:4096+2048:ro", "whole"]
nic = ["02:00:00:00:00:10"]
cmdline = "greeting=web"
"#;

    #[test]
    fn a_full_config_resolves() {
        let path = Path::new("/cfg/web.toml");
        let file = parse_file(FULL, path).expect("parse");
        let spec = resolve(Some((&file, path)), &Overrides::default()).expect("resolve");
        assert_eq!(spec.name, "web-1");
        assert_eq!(spec.image, Path::new("/cfg/web.elf"));
        assert_eq!(
            (spec.memory_mib, spec.vcpus, spec.weight, spec.cap),
            (8, 2, 512, 50)
        );
        let disks: Vec<String> = spec.disks.iter().map(disk_text).collect();
        assert_eq!(disks, ["gpt:1", "lba:4096+2048:ro", "whole"]);
        assert_eq!(spec.nics[0].mac, [2, 0, 0, 0, 0, 0x10, 0, 0]);
        assert_eq!(spec.cmdline, "greeting=web");
    }

    #[test]
    fn overrides_win() {
        let path = Path::new("web.toml");
        let file = parse_file(FULL, path).expect("parse");
        let over = Overrides {
            name: Some("web-2".into()),
            memory_mib: Some(4),
            image: Some("/abs/x.elf".into()),
            ..Overrides::default()
        };
        let spec = resolve(Some((&file, path)), &over).expect("resolve");
        assert_eq!((spec.name.as_str(), spec.memory_mib), ("web-2", 4));
        assert_eq!(spec.image, Path::new("/abs/x.elf"));
        // Flags alone, defaults for the rest.
        let over = Overrides {
            name: Some("t".into()),
            image: Some("t.elf".into()),
            ..Overrides::default()
        };
        let spec = resolve(None, &over).expect("flags");
        assert_eq!((spec.memory_mib, spec.vcpus, spec.disks.len()), (16, 1, 0));
    }

    #[test]
    fn unknown_keys_are_one_line_errors() {
        let err = parse_file(
            "name = \"a\"\nimage = \"x\"\nmemroy = 4\n",
            Path::new("a.toml"),
        )
        .expect_err("unknown key");
        assert!(err.starts_with("a.toml:3: unknown key `memroy`"), "{err}");
        assert!(err.contains("known keys: name, image, memory"), "{err}");
        assert!(!err.contains('\n'));
        let err = parse_file("memory = \"lots\"", Path::new("b.toml")).expect_err("type");
        assert!(err.starts_with("b.toml:1: "), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn bad_values_are_refused() {
        let path = Path::new("c.toml");
        let cases = [
            ("name = \"a b\"\nimage = \"x\"", "bad name"),
            ("name = \"a\"", "no image"),
            ("image = \"x\"", "no name"),
            ("name = \"a\"\nimage = \"x\"\nvcpus = 0", "vcpus"),
            ("name = \"a\"\nimage = \"x\"\ncap = 101", "cap"),
            ("name = \"a\"\nimage = \"x\"\ndisk = [\"sda1\"]", "bad disk"),
            (
                "name = \"a\"\nimage = \"x\"\nnic = [\"01:00:00:00:00:01\"]",
                "bad nic",
            ),
            (
                "name = \"abcdefghijklmnopqrstuvwxyz0123456\"\nimage = \"x\"",
                "bad name",
            ),
        ];
        for (text, want) in cases {
            let file = parse_file(text, path).expect("parse");
            let err = resolve(Some((&file, path)), &Overrides::default()).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn disk_and_mac_syntax() {
        assert_eq!(
            parse_disk("gpt:2:ro").map(|d| (d.view, d.first, d.readonly)),
            Ok((VIEW_GPT, 2, 1))
        );
        assert!(parse_disk("gpt:0").is_err());
        assert!(parse_disk("lba:5+0").is_err());
        assert!(parse_disk("lba:18446744073709551615+2").is_err());
        assert!(parse_disk("lba:5").is_err());
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:0g").is_err());
    }
}
