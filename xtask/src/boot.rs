//! Booting one scenario: resolving its module images (writing derived ones to its
//! scratch directory), preparing its disks (zeros, or a host-made FAT image),
//! assembling the QEMU machine, running it and judging the result, host checks
//! on the disks included. Shared by `run`, `test` and `bench`; they decide what to print.
//!
//! # Invariants
//! - Module strings are `<root-relative path> <args>` with every `,` doubled,
//!   joined by `,` into QEMU's `-initrd` (QEMU's multiboot module syntax).
//! - A scenario never boots with a missing image: the error names the path and
//!   says to run `cargo xtask build`.

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use paravane_tests::{
    judge, judge_interactive, DiskContent, Image, Scenario, Verdict, DID_NOT_EXIT, HOST_PORT,
    SCRATCH,
};

use crate::drive::{self, SerialFeed, Session};
use crate::fat_image;
use crate::qemu::{self, Accel, End, Finished, Launch, Machine};
use crate::workspace::Workspace;
use crate::Result;

/// How to boot, beyond what the scenario says.
#[derive(Debug, Clone, Copy)]
pub struct BootOptions {
    /// Accelerator.
    pub accel: Accel,
    /// `-icount shift=0`.
    pub icount: bool,
    /// Overrides the scenario's vCPU count.
    pub smp: Option<u32>,
    /// Overrides the scenario's RAM (MiB).
    pub mem_mib: Option<u32>,
    /// Overrides the scenario's timeout (seconds).
    pub timeout_secs: Option<u64>,
    /// Serial on the terminal as it arrives.
    pub echo: bool,
    /// Interactive `cargo xtask run`: the driver domain runs its toolstack
    /// (`toolstack=1`: it stays up until `pvctl poweroff`) and the management
    /// UART is a unix socket in the scratch directory ([`mgmt_socket`]).
    pub serve_pvctl: bool,
}

/// QEMU arguments that make the management UART (COM2) a unix socket in the
/// scratch directory, the second serial port (COM1 stays stdio).
pub const MGMT_QEMU_ARGS: [&str; 4] = [
    "-chardev",
    "socket,id=mgmt,path={scratch}/mgmt.sock,server=on,wait=off",
    "-serial",
    "chardev:mgmt",
];

/// The management socket of `scenario` (absolute).
pub fn mgmt_socket(ws: &Workspace, scenario: &Scenario) -> PathBuf {
    ws.abs(&ws.scratch_dir(scenario.name).join("mgmt.sock"))
}

/// The driver domain's module arguments with `toolstack=1` added to its own
/// command line (after `--`), and a 4 MiB RAM disk to cut guest disks from
/// unless it names its disk.
fn with_toolstack(args: &str) -> String {
    let disk = if args.contains("disk=") {
        ""
    } else {
        " disk=4"
    };
    if args.contains("--") {
        format!("{} toolstack=1{disk}", args.trim_end())
    } else {
        format!("{} -- toolstack=1{disk}", args.trim_end())
    }
}

/// A finished, judged boot.
#[derive(Debug)]
pub struct Boot {
    /// What QEMU did.
    pub finished: Finished,
    /// The judge's verdict, with xtask's own findings (timeout, signal) first.
    pub verdict: Verdict,
    /// Absolute path of the log file.
    pub log: PathBuf,
}

/// The machine for `scenario`, with its module images ready on disk.
pub fn prepare(ws: &Workspace, scenario: &Scenario, options: &BootOptions) -> Result<Machine> {
    let kernel = ws.hv_image();
    if !ws.abs(&kernel).is_file() {
        return Err(format!(
            "hypervisor image not found at {}; run cargo xtask build",
            ws.abs(&kernel).display()
        )
        .into());
    }
    let host_port = host_port_for(scenario)?;
    let driver_args = match scenario.modules.first() {
        Some(m) if options.serve_pvctl => with_toolstack(m.args),
        Some(m) => m.args.to_owned(),
        None => String::new(),
    };
    let mut modules = Vec::with_capacity(scenario.modules.len());
    for (i, module) in scenario.modules.iter().enumerate() {
        let path = module_image(ws, scenario, &module.image)?;
        let args = if i == 0 {
            driver_args.as_str()
        } else {
            module.args
        };
        modules.push((path, expand_host_port(args, host_port)));
    }
    let modules: Vec<(PathBuf, &str)> = modules
        .iter()
        .map(|(path, args)| (path.clone(), args.as_str()))
        .collect();
    let mut extra_args = scenario_devices(ws, scenario, host_port)?;
    if options.serve_pvctl && !scenario.qemu_args.iter().any(|a| a.contains("id=mgmt")) {
        let dir = ws.scratch_dir(scenario.name);
        std::fs::create_dir_all(ws.abs(&dir))
            .map_err(|e| format!("cannot create {}: {e}", ws.abs(&dir).display()))?;
        extra_args.extend(expand_scratch(&MGMT_QEMU_ARGS, &dir)?);
    }
    Ok(Machine {
        accel: options.accel,
        icount: options.icount,
        smp: options.smp.unwrap_or(scenario.smp),
        mem_mib: options.mem_mib.unwrap_or(scenario.mem_mib),
        kernel,
        append: scenario.hv_cmdline.to_owned(),
        initrd: initrd_arg(&modules)?,
        extra_args,
        host_port,
    })
}

/// A free host TCP port if [`HOST_PORT`] appears in the scenario's QEMU
/// arguments (a `hostfwd`) or module arguments (a guest told where the
/// host listens), else `None`.
fn host_port_for(scenario: &Scenario) -> Result<Option<u16>> {
    let wanted = scenario
        .qemu_args
        .iter()
        .copied()
        .chain(scenario.modules.iter().map(|m| m.args))
        .any(|a| a.contains(HOST_PORT));
    if !wanted {
        return Ok(None);
    }
    drive::free_host_port()
        .map(Some)
        .map_err(|e| format!("cannot find a free host TCP port: {e}").into())
}

/// `text` with every [`HOST_PORT`] replaced by `port` (unchanged without one).
fn expand_host_port(text: &str, port: Option<u16>) -> String {
    match port {
        Some(port) => text.replace(HOST_PORT, &port.to_string()),
        None => text.to_owned(),
    }
}

/// Creates the scenario's disk images (fresh, zero-filled) and returns its
/// extra QEMU arguments with [`SCRATCH`] replaced by its scratch directory and
/// [`HOST_PORT`] by `host_port`.
fn scenario_devices(
    ws: &Workspace,
    scenario: &Scenario,
    host_port: Option<u16>,
) -> Result<Vec<String>> {
    let dir = ws.scratch_dir(scenario.name);
    if !scenario.disks.is_empty() || drive::driver_for(scenario.name).is_some() {
        std::fs::create_dir_all(ws.abs(&dir))
            .map_err(|e| format!("cannot create {}: {e}", ws.abs(&dir).display()))?;
    }
    for disk in scenario.disks {
        let path = ws.abs(&dir.join(disk.file_name));
        let file = std::fs::File::create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        file.set_len(u64::from(disk.size_mib) << 20)
            .map_err(|e| format!("cannot size {}: {e}", path.display()))?;
        drop(file);
        match &disk.content {
            DiskContent::Zeroed => {}
            DiskContent::Fat(volume) => fat_image::make(&path, volume, &ws.abs(&dir))?,
            DiskContent::Kept { from, .. } => {
                let source = ws.abs(&ws.scratch_dir(from).join(disk.file_name));
                std::fs::copy(&source, &path).map_err(|e| {
                    format!(
                        "cannot copy {} (run scenario {from} first): {e}",
                        source.display()
                    )
                })?;
            }
        }
    }
    let args = expand_scratch(scenario.qemu_args, &dir)?;
    Ok(args
        .iter()
        .map(|a| expand_host_port(a, host_port))
        .collect())
}

/// `args` with every [`SCRATCH`] replaced by `dir` (root-relative, which must
/// not contain commas or whitespace: QEMU option syntax).
pub fn expand_scratch(args: &[&str], dir: &Path) -> Result<Vec<String>> {
    let dir = dir
        .to_str()
        .filter(|d| !d.contains([',', ' ', '\t']))
        .ok_or_else(|| {
            format!(
                "scratch directory {} cannot be named to QEMU",
                dir.display()
            )
        })?;
    Ok(args.iter().map(|a| a.replace(SCRATCH, dir)).collect())
}

/// Boots a prepared machine for `scenario` and judges the run.
pub fn boot(
    ws: &Workspace,
    qemu_bin: &Path,
    scenario: &Scenario,
    machine: &Machine,
    options: &BootOptions,
) -> Result<Boot> {
    let timeout_secs = options.timeout_secs.unwrap_or(scenario.timeout_secs);
    let log = ws.abs(&ws.log_file(scenario.name));
    let finished = qemu::launch(&Launch {
        qemu: qemu_bin,
        args: machine.args(),
        cwd: &ws.root,
        log: &log,
        timeout: Duration::from_secs(timeout_secs),
        echo: options.echo,
        kill_after: scenario.kill_after(),
        host: drive::driver_for(scenario.name).map(|driver| {
            let mut session = Session::new(
                ws.root.clone(),
                ws.abs(&ws.scratch_dir(scenario.name)),
                machine.host_port.unwrap_or(0),
                Arc::new(SerialFeed::default()),
            );
            session.stays_up = options.serve_pvctl;
            (driver, session)
        }),
    })?;
    if finished.end == End::Interrupted {
        return Err(crate::Error::Interrupted);
    }
    let mut verdict = if options.serve_pvctl {
        judge_interactive(scenario, &finished.serial, finished.end.status())
    } else {
        judge(scenario, &finished.serial, finished.end.status())
    };
    let own = match finished.end {
        End::TimedOut => Some(format!("QEMU did not exit within {timeout_secs} s")),
        End::Signalled(signal) => Some(format!("QEMU was killed by signal {signal}")),
        End::HostFailed => Some(format!(
            "host driver failed: {}",
            finished.host_error.as_deref().unwrap_or("?")
        )),
        _ if finished.host_error.is_some() => Some(format!(
            "host driver failed: {}",
            finished.host_error.as_deref().unwrap_or("?")
        )),
        End::Exited(1) if !finished.stderr.is_empty() => {
            Some(format!("QEMU reported: {}", finished.stderr.join(" / ")))
        }
        _ => None,
    };
    if let Some(line) = own {
        // Say precisely why QEMU did not exit, instead of the judge's generic line.
        verdict.failures.retain(|f| f != DID_NOT_EXIT);
        verdict.failures.insert(0, line);
        verdict.passed = false;
    }
    let host_failures = host_checks(ws, scenario)?;
    if !host_failures.is_empty() {
        verdict.failures.extend(host_failures);
        verdict.passed = false;
    }
    Ok(Boot {
        finished,
        verdict,
        log,
    })
}

/// The host's checks on the scenario's disks once QEMU is gone (a FAT
/// volume: `fsck.vfat -n` clean, expected files byte-exact); one line per
/// failure.
fn host_checks(ws: &Workspace, scenario: &Scenario) -> Result<Vec<String>> {
    let dir = ws.abs(&ws.scratch_dir(scenario.name));
    let mut failures = Vec::new();
    for disk in scenario.disks {
        if let Some(volume) = disk.content.checked_volume() {
            failures.extend(fat_image::check(&dir.join(disk.file_name), volume, &dir)?);
        }
    }
    Ok(failures)
}

/// The root-relative path of a module image, writing derived images first.
fn module_image(ws: &Workspace, scenario: &Scenario, image: &Image) -> Result<PathBuf> {
    let source = ws.guest_image(image.guest());
    if !ws.abs(&source).is_file() {
        return Err(format!(
            "guest image `{}` not found at {}; run cargo xtask build",
            image.guest(),
            ws.abs(&source).display()
        )
        .into());
    }
    let Image::Derived {
        from,
        mutate,
        file_name,
    } = *image
    else {
        return Ok(source);
    };
    let bytes = std::fs::read(ws.abs(&source))
        .map_err(|e| format!("cannot read {}: {e}", ws.abs(&source).display()))?;
    let derived = panic::catch_unwind(AssertUnwindSafe(|| mutate(bytes))).map_err(|payload| {
        let why = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("the mutation panicked");
        format!("cannot derive {file_name} from guest `{from}`: {why}")
    })?;
    let dir = ws.scratch_dir(scenario.name);
    std::fs::create_dir_all(ws.abs(&dir))
        .map_err(|e| format!("cannot create {}: {e}", ws.abs(&dir).display()))?;
    let path = dir.join(file_name);
    std::fs::write(ws.abs(&path), derived)
        .map_err(|e| format!("cannot write {}: {e}", ws.abs(&path).display()))?;
    Ok(path)
}

/// QEMU's `-initrd` value: one `<path> <args>` string per module, commas doubled,
/// joined by commas.
pub fn initrd_arg(modules: &[(PathBuf, &str)]) -> Result<String> {
    let mut strings = Vec::with_capacity(modules.len());
    for (path, args) in modules {
        let path = path
            .to_str()
            .ok_or_else(|| format!("module path {} is not UTF-8", path.display()))?;
        if path.contains(char::is_whitespace) {
            return Err(format!("module path `{path}` contains whitespace").into());
        }
        let args = args.trim();
        let string = if args.is_empty() {
            path.to_owned()
        } else {
            format!("{path} {args}")
        };
        strings.push(string.replace(',', ",,"));
    }
    Ok(strings.join(","))
}

/// The last `n` serial lines, then QEMU's stderr and the host driver's
/// notes, for failure reports.
pub fn log_tail(finished: &Finished, n: usize) -> Vec<String> {
    let lines: Vec<&str> = finished.serial.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut tail: Vec<String> = lines[start..].iter().map(|l| (*l).to_owned()).collect();
    tail.extend(finished.stderr.iter().map(|l| format!("qemu: {l}")));
    tail.extend(finished.host_notes.iter().map(|l| format!("host: {l}")));
    tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_joins_modules_and_doubles_commas() {
        let modules = [
            (PathBuf::from("target/guest/a"), "name=driver mem=16M"),
            (PathBuf::from("target/qemu/x/b.elf"), " "),
            (PathBuf::from("c"), "name=c -- list=1,2,3"),
        ];
        assert_eq!(
            initrd_arg(&modules).expect("initrd"),
            "target/guest/a name=driver mem=16M,target/qemu/x/b.elf,c name=c -- list=1,,2,,3"
        );
        assert!(initrd_arg(&[(PathBuf::from("a b"), "")]).is_err());
    }

    #[test]
    fn scratch_is_expanded_in_device_arguments() {
        let args = expand_scratch(
            &[
                "-drive",
                "file={scratch}/a.img,if=none,id=d0",
                "-device",
                "nvme,drive=d0",
            ],
            Path::new("target/qemu/dd-vtd"),
        )
        .expect("expand");
        assert_eq!(
            args,
            [
                "-drive",
                "file=target/qemu/dd-vtd/a.img,if=none,id=d0",
                "-device",
                "nvme,drive=d0"
            ]
        );
        assert!(expand_scratch(&["x"], Path::new("a,b")).is_err());
    }

    #[test]
    fn host_port_is_expanded_in_qemu_and_module_arguments() {
        assert_eq!(
            expand_host_port(
                "user,hostfwd=tcp:127.0.0.1:{host_port}-10.0.2.15:80",
                Some(8080)
            ),
            "user,hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80"
        );
        assert_eq!(
            expand_host_port("name=c -- host=10.0.2.2:{host_port}", Some(9)),
            "name=c -- host=10.0.2.2:9"
        );
        assert_eq!(expand_host_port("a {host_port}", None), "a {host_port}");
        let web = paravane_tests::find("web").expect("web");
        assert!(host_port_for(web).expect("port").is_some_and(|p| p != 0));
        let demo_free = paravane_tests::find("pingpong").expect("pingpong");
        assert_eq!(host_port_for(demo_free).expect("none"), None);
    }

    #[test]
    fn toolstack_goes_on_the_driver_domains_own_command_line() {
        assert_eq!(
            with_toolstack("name=driver mem=16M"),
            "name=driver mem=16M -- toolstack=1 disk=4"
        );
        assert_eq!(
            with_toolstack("name=driver mem=32M -- devices=1"),
            "name=driver mem=32M -- devices=1 toolstack=1 disk=4"
        );
        assert_eq!(
            with_toolstack("name=driver mem=32M -- disk=virtio-blk"),
            "name=driver mem=32M -- disk=virtio-blk toolstack=1"
        );
    }

    #[test]
    fn missing_hypervisor_says_to_build() {
        let ws = Workspace {
            root: std::env::temp_dir().join("xtask-no-such-workspace"),
        };
        let scenario = paravane_tests::find("demo").expect("demo");
        let options = BootOptions {
            accel: Accel::Tcg,
            icount: false,
            smp: None,
            mem_mib: None,
            timeout_secs: None,
            echo: false,
            serve_pvctl: false,
        };
        let Err(crate::Error::Failed(message)) = prepare(&ws, scenario, &options) else {
            panic!("expected a failure")
        };
        assert!(
            message.starts_with("hypervisor image not found at "),
            "{message}"
        );
        assert!(message.ends_with("; run cargo xtask build"), "{message}");
    }

    #[test]
    fn tail_keeps_the_last_lines_and_stderr() {
        let finished = Finished {
            serial: "a\nb\nc\n".into(),
            stderr: vec!["oops".into()],
            end: End::Exited(1),
            elapsed: Duration::ZERO,
            host_notes: vec!["curl: 200".into()],
            host_error: None,
        };
        assert_eq!(
            log_tail(&finished, 2),
            ["b", "c", "qemu: oops", "host: curl: 200"]
        );
    }
}
