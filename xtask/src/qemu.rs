//! Launching QEMU: choosing the accelerator, building the command line, and
//! running one machine with a timeout while its serial output is teed line by line
//! to the log file (and, if asked, to the terminal).
//!
//! # Invariants
//! - QEMU never outlives a [`launch`]: it is killed on timeout, on Ctrl-C, and by
//!   [`KillOnDrop`] if xtask unwinds.
//! - stdin is null (the terminal stays cooked, Ctrl-C reaches xtask); stdout is the
//!   serial port; stderr is QEMU's own diagnostics.
//! - The log file holds the serial lines verbatim, so "serial line N" in a verdict
//!   is line N of the file; QEMU's command line and stderr follow a separator.

use std::fs::File;
use std::io::{BufRead, BufReader, LineWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use clap::ValueEnum;

use crate::drive::{Driver, SerialFeed, Session};
use crate::{interrupted, Result};

/// `--accel`: what the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccelChoice {
    /// KVM if the host CPU has vmx/svm and /dev/kvm opens, else TCG.
    Auto,
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software emulator.
    Tcg,
}

/// The accelerator a machine runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// QEMU's software emulator.
    Tcg,
    /// KVM.
    Kvm,
}

/// What the host offers for KVM.
#[derive(Debug)]
struct KvmProbe {
    /// The host CPU flag for hardware virtualization, if any (`vmx` or `svm`).
    cpu_flag: Option<&'static str>,
    /// Why /dev/kvm cannot be used, if it cannot.
    dev_kvm_error: Option<String>,
}

impl KvmProbe {
    /// Looks at /proc/cpuinfo and /dev/kvm.
    fn host() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let dev_kvm_error = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .err()
            .map(|e| e.to_string());
        Self {
            cpu_flag: virtualization_flag(&cpuinfo),
            dev_kvm_error,
        }
    }
}

/// `vmx` or `svm` if a `flags` line of `cpuinfo` lists it.
fn virtualization_flag(cpuinfo: &str) -> Option<&'static str> {
    cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .filter_map(|line| line.split_once(':'))
        .flat_map(|(_, flags)| flags.split_whitespace())
        .find_map(|flag| match flag {
            "vmx" => Some("vmx"),
            "svm" => Some("svm"),
            _ => None,
        })
}

/// Picks the accelerator for `--accel auto`, with the reason to print.
fn choose(probe: &KvmProbe) -> (Accel, String) {
    match (probe.cpu_flag, &probe.dev_kvm_error) {
        (None, _) => (Accel::Tcg, "host CPU has no vmx/svm".to_owned()),
        (Some(flag), Some(e)) => (
            Accel::Tcg,
            format!("host CPU has {flag} but /dev/kvm cannot be opened: {e}"),
        ),
        (Some(flag), None) => (
            Accel::Kvm,
            format!("host CPU has {flag} and /dev/kvm opens"),
        ),
    }
}

/// Resolves `--accel`, printing the choice `auto` made and why.
pub fn resolve_accel(choice: AccelChoice) -> Result<Accel> {
    match choice {
        AccelChoice::Tcg => Ok(Accel::Tcg),
        AccelChoice::Kvm => match KvmProbe::host().dev_kvm_error {
            None => Ok(Accel::Kvm),
            Some(e) => Err(format!("--accel kvm: /dev/kvm cannot be opened: {e}").into()),
        },
        AccelChoice::Auto => {
            let (accel, why) = choose(&KvmProbe::host());
            let name = match accel {
                Accel::Tcg => "TCG",
                Accel::Kvm => "KVM",
            };
            println!("accel auto: using {name} ({why})");
            Ok(accel)
        }
    }
}

/// Everything that determines one QEMU command line.
#[derive(Debug, Clone)]
pub struct Machine {
    /// Accelerator.
    pub accel: Accel,
    /// Deterministic instruction counting (`-icount shift=0`); TCG only.
    pub icount: bool,
    /// vCPUs.
    pub smp: u32,
    /// RAM in MiB.
    pub mem_mib: u32,
    /// The hypervisor ELF (`-kernel`), relative to QEMU's working directory.
    pub kernel: PathBuf,
    /// hv-core's command line (`-append`).
    pub append: String,
    /// The `-initrd` module list (see [`crate::boot::initrd_arg`]); empty for none.
    pub initrd: String,
    /// The scenario's own devices and other arguments, appended last.
    pub extra_args: Vec<String>,
    /// The host port `{host_port}` stood for in `extra_args` or the module
    /// arguments, if it appeared.
    pub host_port: Option<u16>,
}

impl Machine {
    /// How the figures of this machine were produced: `tcg`, `icount` or `kvm`.
    pub fn mode(&self) -> &'static str {
        match (self.accel, self.icount) {
            (Accel::Kvm, _) => "kvm",
            (Accel::Tcg, true) => "icount",
            (Accel::Tcg, false) => "tcg",
        }
    }

    /// Label for progress lines: `TCG`, `TCG, icount` or `KVM`.
    pub fn label(&self) -> &'static str {
        match (self.accel, self.icount) {
            (Accel::Kvm, _) => "KVM",
            (Accel::Tcg, true) => "TCG, icount",
            (Accel::Tcg, false) => "TCG",
        }
    }

    /// QEMU's arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec!["-machine".into(), "q35".into()];
        match self.accel {
            Accel::Tcg => args.extend(["-cpu", "max", "-accel", "tcg"].map(String::from)),
            Accel::Kvm => {
                args.extend(["-accel", "kvm", "-cpu", "host,-arch-capabilities"].map(String::from));
            }
        }
        if self.icount {
            args.extend(["-icount", "shift=0"].map(String::from));
        }
        args.extend([
            "-m".to_owned(),
            format!("{}M", self.mem_mib),
            "-smp".to_owned(),
            self.smp.to_string(),
        ]);
        args.extend(
            [
                "-display",
                "none",
                "-monitor",
                "none",
                "-no-reboot",
                "-serial",
                "stdio",
                "-device",
                "isa-debug-exit,iobase=0xf4,iosize=0x04",
                "-kernel",
            ]
            .map(String::from),
        );
        args.push(self.kernel.display().to_string());
        args.extend(["-append".to_owned(), self.append.clone()]);
        if !self.initrd.is_empty() {
            args.extend(["-initrd".to_owned(), self.initrd.clone()]);
        }
        args.extend(self.extra_args.iter().cloned());
        args
    }
}

/// A QEMU run to perform.
#[derive(Debug)]
pub struct Launch<'a> {
    /// The QEMU binary.
    pub qemu: &'a Path,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its working directory (module paths are relative to it).
    pub cwd: &'a Path,
    /// Absolute path of the log file to (re)write.
    pub log: &'a Path,
    /// How long QEMU may run.
    pub timeout: Duration,
    /// Print serial lines on stdout and QEMU's stderr on stderr as they arrive.
    pub echo: bool,
    /// Kill QEMU with SIGKILL as soon as a serial line contains this.
    pub kill_after: Option<&'a str>,
    /// A host driver to run beside QEMU, with its session ([`crate::drive`]).
    pub host: Option<(Driver, Session)>,
}

/// How a QEMU run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// QEMU exited with this status.
    Exited(i32),
    /// QEMU was killed by this signal (not by xtask).
    Signalled(i32),
    /// It ran past the timeout and was killed.
    TimedOut,
    /// The user pressed Ctrl-C; QEMU was killed.
    Interrupted,
    /// QEMU was killed with SIGKILL after the line [`Launch::kill_after`] named.
    KilledOnCue,
    /// The host driver failed ([`Finished::host_error`]); QEMU was killed.
    HostFailed,
}

impl End {
    /// The exit status, if QEMU exited by itself.
    pub fn status(self) -> Option<i32> {
        match self {
            End::Exited(status) => Some(status),
            _ => None,
        }
    }
}

/// A finished QEMU run.
#[derive(Debug)]
pub struct Finished {
    /// Serial output, one `\n`-terminated line per serial line (`\r` stripped).
    pub serial: String,
    /// QEMU's stderr lines.
    pub stderr: Vec<String>,
    /// How it ended.
    pub end: End,
    /// Wall time from spawn to end.
    pub elapsed: Duration,
    /// What the host driver did (its notes), in order.
    pub host_notes: Vec<String>,
    /// Why the host driver failed, if it did.
    pub host_error: Option<String>,
}

/// A child process killed (and reaped) when dropped, so an early return or a panic
/// never leaves QEMU running.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Where a captured line came from.
#[derive(Clone, Copy)]
enum Source {
    Serial,
    Stderr,
}

/// How often the run loop checks for exit, timeout and Ctrl-C.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for the last output after QEMU ended.
const DRAIN: Duration = Duration::from_secs(2);

/// Runs QEMU to completion, timeout or Ctrl-C.
pub fn launch(launch: &Launch<'_>) -> Result<Finished> {
    if let Some(dir) = launch.log.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let log_file = File::create(launch.log)
        .map_err(|e| format!("cannot create {}: {e}", launch.log.display()))?;
    let mut log = LineWriter::new(log_file);

    let started = Instant::now();
    let mut child = Command::new(launch.qemu)
        .args(&launch.args)
        .current_dir(launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(KillOnDrop)
        .map_err(|e| format!("cannot start {}: {e}", launch.qemu.display()))?;

    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.0.stdout.take() {
        let tx = tx.clone();
        thread::spawn(move || forward_lines(stdout, Source::Serial, &tx));
    }
    if let Some(stderr) = child.0.stderr.take() {
        thread::spawn(move || forward_lines(stderr, Source::Stderr, &tx));
    }

    let mut feed = None;
    let mut host: Option<JoinHandle<std::result::Result<(), String>>> = None;
    if let Some((driver, session)) = &launch.host {
        let (driver, session) = (*driver, session.clone());
        feed = Some(session.feed.clone());
        host = Some(thread::spawn(move || driver(&session)));
    }
    let mut capture = Capture {
        serial: String::new(),
        stderr: Vec::new(),
        echo: launch.echo,
        log: &mut log,
        feed: feed.clone(),
        notes: Vec::new(),
    };
    let mut host_error = None;
    let deadline = started + launch.timeout;
    let end = loop {
        if interrupted() {
            kill(&mut child);
            break End::Interrupted;
        }
        capture.take_notes();
        if host.as_ref().is_some_and(JoinHandle::is_finished) {
            if let Some(Err(why)) = host.take().map(join_driver) {
                host_error = Some(why);
                kill(&mut child);
                break End::HostFailed;
            }
        }
        match rx.recv_timeout(POLL) {
            Ok((source, line)) => {
                capture.take(source, &line);
                let cue = launch
                    .kill_after
                    .filter(|_| matches!(source, Source::Serial));
                if cue.is_some_and(|cue| line.contains(cue)) {
                    // `Child::kill` sends SIGKILL: QEMU gets no chance to clean up.
                    kill(&mut child);
                    break End::KilledOnCue;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Both pipes closed but the process lingers: keep polling for its exit.
            Err(RecvTimeoutError::Disconnected) => thread::sleep(POLL),
        }
        if let Some(status) = child
            .0
            .try_wait()
            .map_err(|e| format!("cannot wait for QEMU: {e}"))?
        {
            break ended(status);
        }
        if Instant::now() >= deadline {
            kill(&mut child);
            break End::TimedOut;
        }
    };
    let elapsed = started.elapsed();
    capture.drain(&rx);
    if let Some(feed) = &feed {
        feed.end();
    }
    if let Some(Err(why)) = host.take().map(join_driver) {
        host_error.get_or_insert(why);
    }
    capture.take_notes();

    let Capture {
        serial,
        stderr,
        notes: host_notes,
        ..
    } = capture;
    writeln!(log, "---- {} ----", shell_words(launch.qemu, &launch.args))
        .and_then(|()| stderr.iter().try_for_each(|l| writeln!(log, "{l}")))
        .and_then(|()| {
            host_notes
                .iter()
                .try_for_each(|l| writeln!(log, "host: {l}"))
        })
        .and_then(|()| match &host_error {
            Some(why) => writeln!(log, "host: FAILED: {why}"),
            None => Ok(()),
        })
        .and_then(|()| log.flush())
        .map_err(|e| format!("cannot write {}: {e}", launch.log.display()))?;
    Ok(Finished {
        serial,
        stderr,
        end,
        elapsed,
        host_notes,
        host_error,
    })
}

/// The host driver's result; a panicking driver is a failed one.
fn join_driver(
    handle: JoinHandle<std::result::Result<(), String>>,
) -> std::result::Result<(), String> {
    handle
        .join()
        .unwrap_or_else(|_| Err("the host driver panicked".to_owned()))
}

/// Collected output of a run.
struct Capture<'a> {
    serial: String,
    stderr: Vec<String>,
    echo: bool,
    log: &'a mut LineWriter<File>,
    /// The host driver's view of the serial console, if there is a driver.
    feed: Option<Arc<SerialFeed>>,
    /// The host driver's notes so far.
    notes: Vec<String>,
}

impl Capture<'_> {
    /// Moves the host driver's new notes in (echoing them if asked).
    fn take_notes(&mut self) {
        if let Some(feed) = &self.feed {
            for note in feed.take_notes() {
                if self.echo {
                    println!("host: {note}");
                }
                self.notes.push(note);
            }
        }
    }

    /// Records one line.
    fn take(&mut self, source: Source, line: &str) {
        match source {
            Source::Serial => {
                // A log write error must not stop the run; the in-memory copy is judged.
                let _ = writeln!(self.log, "{line}");
                self.serial.push_str(line);
                self.serial.push('\n');
                if let Some(feed) = &self.feed {
                    feed.push_line(line);
                }
                if self.echo {
                    println!("{line}");
                }
            }
            Source::Stderr => {
                if self.echo {
                    eprintln!("qemu: {line}");
                }
                self.stderr.push(line.to_owned());
            }
        }
    }

    /// Takes the lines still in flight after QEMU ended.
    fn drain(&mut self, rx: &Receiver<(Source, String)>) {
        let until = Instant::now() + DRAIN;
        while let Some(left) = until.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok((source, line)) => self.take(source, &line),
                Err(_) => break,
            }
        }
    }
}

/// Reads `pipe` line by line (lossy UTF-8, `\r` stripped) and sends each line.
fn forward_lines(pipe: impl Read, source: Source, tx: &mpsc::Sender<(Source, String)>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let line = text.trim_end_matches(['\n', '\r']).to_owned();
                if tx.send((source, line)).is_err() {
                    return;
                }
            }
        }
    }
}

/// The command line as a shell would need it typed (for the log, to reproduce a run).
pub fn shell_words(program: &Path, args: &[String]) -> String {
    let quote = |word: &str| {
        let plain = !word.is_empty()
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./=,:+-".contains(c));
        if plain {
            word.to_owned()
        } else {
            format!("'{}'", word.replace('\'', r"'\''"))
        }
    };
    let program = program.file_name().map_or_else(
        || program.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    );
    std::iter::once(program)
        .chain(args.iter().map(|a| quote(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Kills and reaps QEMU.
fn kill(child: &mut KillOnDrop) {
    let _ = child.0.kill();
    let _ = child.0.wait();
}

/// Maps QEMU's exit to an [`End`]. An exit racing a Ctrl-C (the terminal sends
/// SIGINT to QEMU too) counts as interrupted.
fn ended(status: ExitStatus) -> End {
    use std::os::unix::process::ExitStatusExt;
    let end = match (status.code(), status.signal()) {
        (Some(code), _) => End::Exited(code),
        (None, Some(signal)) => End::Signalled(signal),
        (None, None) => End::Signalled(0),
    };
    if !interrupted() && matches!(end, End::Exited(0) | End::Signalled(_)) {
        // QEMU exits with 0 on SIGINT: give our own handler a moment to see it too.
        thread::sleep(Duration::from_millis(50));
    }
    if interrupted() {
        End::Interrupted
    } else {
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prereq::{find_on_path, QEMU};

    #[test]
    fn shell_quoting() {
        let args = [
            "-append".to_owned(),
            "a b".to_owned(),
            "it's".to_owned(),
            "x=1,y".to_owned(),
        ];
        assert_eq!(
            shell_words(Path::new("/usr/bin/qemu"), &args),
            r"qemu -append 'a b' 'it'\''s' x=1,y"
        );
    }

    #[test]
    fn cpu_flags() {
        let intel = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        assert_eq!(virtualization_flag(intel), Some("vmx"));
        assert_eq!(virtualization_flag("flags : fpu svm\n"), Some("svm"));
        assert_eq!(
            virtualization_flag("flags : fpu vmxx sse\nbugs : vmx\n"),
            None
        );
    }

    #[test]
    fn auto_picks_tcg_without_hardware_virtualization() {
        let probe = KvmProbe {
            cpu_flag: None,
            dev_kvm_error: None,
        };
        let (accel, why) = choose(&probe);
        assert_eq!(accel, Accel::Tcg);
        assert!(why.contains("no vmx/svm"), "{why}");
        let probe = KvmProbe {
            cpu_flag: Some("vmx"),
            dev_kvm_error: Some("Permission denied".into()),
        };
        assert_eq!(choose(&probe).0, Accel::Tcg);
        let probe = KvmProbe {
            cpu_flag: Some("svm"),
            dev_kvm_error: None,
        };
        assert_eq!(choose(&probe).0, Accel::Kvm);
    }

    fn machine(accel: Accel, icount: bool) -> Machine {
        Machine {
            accel,
            icount,
            smp: 2,
            mem_mib: 512,
            kernel: PathBuf::from("target/hv/x86_64-unknown-none/release/hv-core"),
            append: "loglvl=info".into(),
            initrd: "a x=1,b".into(),
            extra_args: Vec::new(),
            host_port: None,
        }
    }

    #[test]
    fn tcg_command_line() {
        let args = machine(Accel::Tcg, false).args().join(" ");
        assert_eq!(
            args,
            "-machine q35 -cpu max -accel tcg -m 512M -smp 2 -display none -monitor none \
             -no-reboot -serial stdio -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
             -kernel target/hv/x86_64-unknown-none/release/hv-core -append loglvl=info \
             -initrd a x=1,b"
        );
        assert_eq!(machine(Accel::Tcg, false).mode(), "tcg");
    }

    #[test]
    fn icount_and_kvm_command_lines() {
        let m = machine(Accel::Tcg, true);
        assert!(m.args().join(" ").contains("-accel tcg -icount shift=0 -m"));
        assert_eq!((m.mode(), m.label()), ("icount", "TCG, icount"));
        let m = machine(Accel::Kvm, false);
        assert!(m
            .args()
            .join(" ")
            .starts_with("-machine q35 -accel kvm -cpu host,-arch-capabilities -m"));
        assert_eq!(m.mode(), "kvm");
        let mut m = machine(Accel::Tcg, false);
        m.initrd.clear();
        assert!(!m.args().contains(&"-initrd".to_owned()));
    }

    #[test]
    fn scenario_devices_come_last() {
        let mut m = machine(Accel::Tcg, false);
        m.extra_args = vec!["-device".into(), "intel-iommu".into()];
        let args = m.args();
        assert_eq!(args[args.len() - 2..], ["-device", "intel-iommu"]);
        let initrd = args.iter().position(|a| a == "-initrd").expect("initrd");
        assert!(initrd < args.len() - 2);
    }

    /// A flat multiboot (a.out kludge) kernel loaded at 1 MiB that writes `text` to
    /// COM1 and then `exit` to the debug-exit port, or spins if `exit` is `None`.
    fn tiny_kernel(text: &str, exit: Option<u32>) -> Vec<u8> {
        const LOAD: u32 = 0x10_0000;
        const MAGIC: u32 = 0x1bad_b002;
        const FLAGS: u32 = 1 << 16;
        let mut k = Vec::new();
        for word in [
            MAGIC,
            FLAGS,
            0u32.wrapping_sub(MAGIC + FLAGS),
            LOAD,      // header_addr
            LOAD,      // load_addr
            0,         // load_end_addr: whole file
            0,         // bss_end_addr: none
            LOAD + 32, // entry_addr
        ] {
            k.extend_from_slice(&word.to_le_bytes());
        }
        k.extend_from_slice(&[0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
        for byte in text.bytes() {
            k.extend_from_slice(&[0xb0, byte, 0xee]); // mov al, byte; out dx, al
        }
        match exit {
            Some(value) => {
                k.extend_from_slice(&[0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4
                k.push(0xb8); // mov eax, imm32
                k.extend_from_slice(&value.to_le_bytes());
                k.extend_from_slice(&[0xef, 0xf4, 0xeb, 0xfd]); // out dx, eax; hlt; jmp hlt
            }
            None => k.extend_from_slice(&[0xeb, 0xfe]), // jmp $
        }
        k
    }

    /// A fresh scratch directory holding `kernel.bin`.
    fn scratch_with_kernel(tag: &str, kernel: &[u8]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        std::fs::write(dir.join("kernel.bin"), kernel).expect("kernel");
        dir
    }

    fn tiny_machine(initrd: &str) -> Machine {
        Machine {
            accel: Accel::Tcg,
            icount: false,
            smp: 1,
            mem_mib: 64,
            kernel: PathBuf::from("kernel.bin"),
            append: "x".into(),
            initrd: initrd.into(),
            extra_args: Vec::new(),
            host_port: None,
        }
    }

    #[test]
    fn boots_a_tiny_kernel_and_reads_its_exit_status() {
        let Some(qemu) = find_on_path(QEMU) else {
            eprintln!("skipped: {QEMU} not installed");
            return;
        };
        let dir = scratch_with_kernel(
            "boot",
            &tiny_kernel("(hv) hi\r\n(d1) there\npartial", Some(0x10)),
        );
        std::fs::write(dir.join("mod.bin"), b"module").expect("module");
        let log = dir.join("out.log");
        let finished = launch(&Launch {
            qemu: &qemu,
            args: tiny_machine("mod.bin a=1,,2").args(),
            cwd: &dir,
            log: &log,
            timeout: Duration::from_secs(30),
            echo: false,
            kill_after: None,
            host: None,
        })
        .expect("launch");
        assert_eq!(finished.end, End::Exited(33), "{finished:?}");
        assert_eq!(finished.serial, "(hv) hi\n(d1) there\npartial\n");
        let logged = std::fs::read_to_string(&log).expect("log");
        assert!(
            logged
                .starts_with("(hv) hi\n(d1) there\npartial\n---- qemu-system-x86_64 -machine q35"),
            "{logged}"
        );
        assert!(
            logged.contains(" -initrd 'mod.bin a=1,,2' ----\n"),
            "{logged}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn kills_a_kernel_that_never_exits() {
        let Some(qemu) = find_on_path(QEMU) else {
            eprintln!("skipped: {QEMU} not installed");
            return;
        };
        let dir = scratch_with_kernel("hang", &tiny_kernel("spinning", None));
        let started = Instant::now();
        let finished = launch(&Launch {
            qemu: &qemu,
            args: tiny_machine("").args(),
            cwd: &dir,
            log: &dir.join("out.log"),
            timeout: Duration::from_secs(2),
            echo: false,
            kill_after: None,
            host: None,
        })
        .expect("launch");
        assert_eq!(finished.end, End::TimedOut);
        assert_eq!(finished.serial, "spinning\n");
        assert!(started.elapsed() < Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn kills_a_kernel_on_its_cue() {
        let Some(qemu) = find_on_path(QEMU) else {
            eprintln!("skipped: {QEMU} not installed");
            return;
        };
        let dir = scratch_with_kernel("cue", &tiny_kernel("flushed, kill me\n", None));
        let started = Instant::now();
        let finished = launch(&Launch {
            qemu: &qemu,
            args: tiny_machine("").args(),
            cwd: &dir,
            log: &dir.join("out.log"),
            timeout: Duration::from_secs(30),
            echo: false,
            kill_after: Some("kill me"),
            host: None,
        })
        .expect("launch");
        assert_eq!(finished.end, End::KilledOnCue);
        assert_eq!(finished.serial, "flushed, kill me\n");
        // Killed at once, long before the timeout.
        assert!(started.elapsed() < Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn reports_qemu_errors_on_stderr() {
        let Some(qemu) = find_on_path(QEMU) else {
            eprintln!("skipped: {QEMU} not installed");
            return;
        };
        let dir = scratch_with_kernel("err", &tiny_kernel("", Some(0x10)));
        let finished = launch(&Launch {
            qemu: &qemu,
            args: tiny_machine("missing-module.bin").args(),
            cwd: &dir,
            log: &dir.join("out.log"),
            timeout: Duration::from_secs(30),
            echo: false,
            kill_after: None,
            host: None,
        })
        .expect("launch");
        assert_eq!(finished.end, End::Exited(1), "{finished:?}");
        assert!(!finished.stderr.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn session_for(dir: &Path) -> Session {
        Session::new(
            dir.to_owned(),
            dir.to_owned(),
            0,
            Arc::new(SerialFeed::default()),
        )
    }

    #[test]
    fn host_driver_sees_the_serial_and_its_notes_are_logged() {
        let Some(qemu) = find_on_path(QEMU) else {
            eprintln!("skipped: {QEMU} not installed");
            return;
        };
        let dir = scratch_with_kernel("drive", &tiny_kernel("(d1) ready\n", None));
        let started = Instant::now();
        let driver: Driver = |s| {
            let line = s.wait_for("ready", Duration::from_secs(20))?;
            s.note(format!("saw `{line}`"));
            Ok(())
        };
        let log = dir.join("out.log");
        let finished = launch(&Launch {
            qemu: &qemu,
            args: tiny_machine("").args(),
            cwd: &dir,
            log: &log,
            timeout: Duration::from_secs(3),
            echo: false,
            kill_after: None,
            host: Some((driver, session_for(&dir))),
        })
        .expect("launch");
        // The kernel spins: the run ends by the timeout, the driver succeeded.
        assert_eq!(finished.end, End::TimedOut);
        assert_eq!(finished.host_error, None);
        assert_eq!(finished.host_notes, ["saw `(d1) ready`"]);
        assert!(started.elapsed() < Duration::from_secs(15));
        let logged = std::fs::read_to_string(&log).expect("log");
        assert!(logged.starts_with("(d1) ready\n---- "), "{logged}");
        assert!(logged.contains("\nhost: saw `(d1) ready`\n"), "{logged}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_failing_host_driver_kills_qemu_at_once() {
        let Some(qemu) = find_on_path(QEMU) else {
            eprintln!("skipped: {QEMU} not installed");
            return;
        };
        let dir = scratch_with_kernel("drive-fail", &tiny_kernel("(d1) up\n", None));
        let started = Instant::now();
        let driver: Driver = |s| {
            s.wait_for("up", Duration::from_secs(20))?;
            Err("curl: connection refused".to_owned())
        };
        let finished = launch(&Launch {
            qemu: &qemu,
            args: tiny_machine("").args(),
            cwd: &dir,
            log: &dir.join("out.log"),
            timeout: Duration::from_secs(60),
            echo: false,
            kill_after: None,
            host: Some((driver, session_for(&dir))),
        })
        .expect("launch");
        assert_eq!(finished.end, End::HostFailed);
        assert_eq!(
            finished.host_error.as_deref(),
            Some("curl: connection refused")
        );
        assert!(started.elapsed() < Duration::from_secs(20));
        let _ = std::fs::remove_dir_all(dir);
    }
}
