//! `pvctl`: Paravane's admin CLI, what `xl` is for Xen. It talks to the
//! driver domain's toolstack over the management socket (SPEC.md §17) —
//! the second serial port of the machine, which QEMU exposes as a unix
//! socket — and creates, lists, watches, pauses and destroys domains while
//! the machine runs.
//!
//! Output is a table for people, JSON with `--json`. Every failure is one
//! line on stderr (`pvctl: …`) and exit status 1.
#![forbid(unsafe_code)]

mod client;
mod config;
mod image;
mod output;

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use hypercall_abi::mgmt::{
    exact, name_field, split, ConsoleData, ConsoleRead, Count, CreateFixed, Created, DomRef,
    DomainEntry, InfoReply, ListHeader, KIND_BENCH_REPORT, KIND_CONSOLE_READ, KIND_CONSOLE_WRITE,
    KIND_CREATE, KIND_DESTROY, KIND_DMESG, KIND_INFO, KIND_LIST, KIND_PAUSE, KIND_POWEROFF,
    KIND_SHUTDOWN, KIND_UNPAUSE,
};
use serde::Serialize;
use zerocopy::IntoBytes;

use client::{split_list, Client};
use config::{DomainSpec, Overrides};
use output::{DomainRow, HostInfo};

#[derive(Parser, Debug)]
#[command(
    name = "pvctl",
    version,
    about = "Manage Paravane domains on a running machine"
)]
struct Cli {
    /// The management socket (QEMU's unix socket for the machine's second serial port).
    #[arg(long, env = "PVCTL_SOCKET", global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the driver domain's answer.
    #[arg(long, global = true, default_value_t = 60)]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the domains.
    List,
    /// Create a domain from a config file and/or flags.
    Create(CreateArgs),
    /// Kill a domain at once (as a crash would).
    Destroy(Target),
    /// Ask a domain to shut down.
    Shutdown(Target),
    /// Stop a domain's vCPUs.
    Pause(Target),
    /// Let a paused domain run again.
    Unpause(Target),
    /// Attach to a domain's console (detach with Ctrl-]).
    Console(ConsoleArgs),
    /// Live CPU and memory per domain.
    Top(TopArgs),
    /// The hypervisor: version, ABI, CPUs, memory, IOMMU.
    Info,
    /// The hypervisor's log.
    Dmesg,
    /// Power the machine off.
    Poweroff,
    /// Make the driver domain print its create-time figures as BENCH lines.
    #[command(hide = true)]
    BenchReport,
}

#[derive(Args, Debug)]
struct Target {
    /// Domain id or name.
    domain: String,
}

#[derive(Args, Debug)]
struct CreateArgs {
    /// A TOML domain config (name, image, memory, vcpus, weight, cap, disk, nic, cmdline).
    config: Option<PathBuf>,
    /// The guest kernel (ELF).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Memory in MiB.
    #[arg(long = "mem")]
    memory: Option<u64>,
    /// vCPUs.
    #[arg(long)]
    vcpus: Option<u32>,
    /// A disk: whole, gpt:<n> or lba:<first>+<count> of the driver domain's disk, [:ro]. Repeatable.
    #[arg(long = "disk")]
    disks: Vec<String>,
    /// A NIC's MAC address. Repeatable.
    #[arg(long = "nic")]
    nics: Vec<String>,
    /// The domain's name.
    #[arg(long)]
    name: Option<String>,
    /// The guest's command line.
    #[arg(long)]
    cmdline: Option<String>,
}

#[derive(Args, Debug)]
struct ConsoleArgs {
    /// Domain id or name.
    domain: String,
    /// Print what the console holds and exit (no attach).
    #[arg(long)]
    once: bool,
}

#[derive(Args, Debug)]
struct TopArgs {
    /// One refresh, then exit.
    #[arg(long)]
    once: bool,
    /// Refreshes before exiting (default: until Ctrl-C).
    #[arg(long)]
    iterations: Option<u64>,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    delay: f64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("pvctl: {line}");
            ExitCode::FAILURE
        }
    }
}

fn connect(cli: &Cli) -> Result<Client, String> {
    let socket = cli
        .socket
        .as_deref()
        .ok_or("no management socket: give --socket PATH or set PVCTL_SOCKET")?;
    Client::connect(socket, Duration::from_secs(cli.timeout.max(1)))
}

fn print_json<T: Serialize>(value: &T) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(|e| format!("json: {e}"))?;
    println!("{text}");
    Ok(())
}

fn run(cli: &Cli) -> Result<(), String> {
    // Check what needs no machine first, so a bad config fails fast.
    let spec = match &cli.command {
        Command::Create(args) => {
            let spec = create_spec(args)?;
            let image = load_image(&spec.image)?;
            Some((spec, image))
        }
        _ => None,
    };
    let mut c = connect(cli)?;
    match &cli.command {
        Command::List => {
            let (_, rows) = list(&mut c)?;
            if cli.json {
                print_json(&rows)
            } else {
                print!("{}", output::list_table(&rows));
                Ok(())
            }
        }
        Command::Create(_) => match spec {
            Some((spec, image)) => create(&mut c, &spec, &image, cli.json),
            None => Err("internal: no spec".into()),
        },
        Command::Destroy(t) => simple(&mut c, KIND_DESTROY, &t.domain, "destroyed", cli.json),
        Command::Shutdown(t) => simple(
            &mut c,
            KIND_SHUTDOWN,
            &t.domain,
            "asked to shut down",
            cli.json,
        ),
        Command::Pause(t) => simple(&mut c, KIND_PAUSE, &t.domain, "paused", cli.json),
        Command::Unpause(t) => simple(&mut c, KIND_UNPAUSE, &t.domain, "unpaused", cli.json),
        Command::Console(a) => console(&mut c, &a.domain, a.once),
        Command::Top(a) => top(&mut c, a, cli.json),
        Command::Info => {
            let info = info(&mut c)?;
            if cli.json {
                print_json(&info)
            } else {
                print!("{}", info.text());
                Ok(())
            }
        }
        Command::Dmesg => dmesg(&mut c),
        Command::Poweroff => {
            c.call(KIND_POWEROFF, &[])?;
            if !cli.json {
                println!("the machine is powering off");
            }
            Ok(())
        }
        Command::BenchReport => {
            let n = c.call(KIND_BENCH_REPORT, &[])?;
            let n = exact::<Count>(&n).ok_or("malformed reply")?;
            println!("{} figures printed on the machine's console", n.count);
            Ok(())
        }
    }
}

fn create_spec(args: &CreateArgs) -> Result<DomainSpec, String> {
    let over = Overrides {
        name: args.name.clone(),
        image: args.image.clone(),
        memory_mib: args.memory,
        vcpus: args.vcpus,
        disks: args.disks.clone(),
        nics: args.nics.clone(),
        cmdline: args.cmdline.clone(),
    };
    match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let file = config::parse_file(&text, path)?;
            config::resolve(Some((&file, path)), &over)
        }
        None => config::resolve(None, &over),
    }
}

/// `LIST`, as rows.
fn list(c: &mut Client) -> Result<(ListHeader, Vec<DomainRow>), String> {
    let payload = c.call(KIND_LIST, &[])?;
    let (head, entries) = split_list::<ListHeader, DomainEntry>(&payload, |h| h.count as usize)
        .ok_or("the driver domain sent a malformed list")?;
    Ok((head, entries.iter().map(DomainRow::from_entry).collect()))
}

fn info(c: &mut Client) -> Result<HostInfo, String> {
    let payload = c.call(KIND_INFO, &[])?;
    let reply = exact::<InfoReply>(&payload).ok_or("the driver domain sent a malformed info")?;
    Ok(HostInfo::from_reply(&reply, c.server.protocol))
}

/// A domain id, or the id of the domain with that name.
fn resolve_domain(c: &mut Client, text: &str) -> Result<u32, String> {
    if let Ok(id) = text.parse::<u32>() {
        return Ok(id);
    }
    let (_, rows) = list(c)?;
    rows.iter()
        .find(|r| r.name == text)
        .map(|r| r.id)
        .ok_or_else(|| format!("no domain named `{text}`"))
}

#[derive(Serialize)]
struct Done {
    domid: u32,
    done: &'static str,
}

fn simple(
    c: &mut Client,
    kind: u16,
    target: &str,
    what: &'static str,
    json: bool,
) -> Result<(), String> {
    let domid = resolve_domain(c, target)?;
    let r = DomRef { domid, pad: 0 };
    c.call(kind, &[r.as_bytes()])?;
    if json {
        print_json(&Done { domid, done: what })
    } else {
        println!("domain {domid} {what}");
        Ok(())
    }
}

#[derive(Serialize)]
struct CreatedJson {
    domid: u32,
    name: String,
    image_bytes: usize,
    image_sent: bool,
    devices: u32,
    disks: Vec<String>,
    toolstack_us: f64,
    hypervisor_us: f64,
}

/// The image file, compacted for sending ([`image::compact`]).
fn load_image(path: &Path) -> Result<Vec<u8>, String> {
    let raw =
        std::fs::read(path).map_err(|e| format!("cannot read image {}: {e}", path.display()))?;
    if raw.is_empty() {
        return Err(format!("image {} is empty", path.display()));
    }
    Ok(image::compact(&raw))
}

fn create(c: &mut Client, spec: &DomainSpec, image: &[u8], json: bool) -> Result<(), String> {
    let (digest, sent) = c.upload(image)?;
    let fixed = CreateFixed {
        image: digest,
        max_pages: spec.memory_mib * 256,
        vcpus: spec.vcpus,
        weight: spec.weight,
        cap_percent: spec.cap,
        nr_disks: spec.disks.len() as u16,
        nr_nics: spec.nics.len() as u16,
        cmdline_len: spec.cmdline.len() as u32,
        pad: 0,
        name: name_field(&spec.name).ok_or("name too long")?,
    };
    let mut parts: Vec<&[u8]> = vec![fixed.as_bytes()];
    for d in &spec.disks {
        parts.push(d.as_bytes());
    }
    for n in &spec.nics {
        parts.push(n.as_bytes());
    }
    parts.push(spec.cmdline.as_bytes());
    let payload = c
        .call(KIND_CREATE, &parts)
        .map_err(|e| format!("cannot create {}: {e}", spec.name))?;
    let created = exact::<Created>(&payload).ok_or("the driver domain sent a malformed reply")?;
    let out = CreatedJson {
        domid: created.domid,
        name: spec.name.clone(),
        image_bytes: image.len(),
        image_sent: sent,
        devices: created.records,
        disks: spec.disks.iter().map(config::disk_text).collect(),
        toolstack_us: created.toolstack_ns as f64 / 1000.0,
        hypervisor_us: created.hypervisor_ns as f64 / 1000.0,
    };
    if json {
        print_json(&out)
    } else {
        println!(
            "created domain {} ({}): {} KiB image{}, {} device(s), toolstack {:.0} us + hypervisor {:.0} us",
            out.domid,
            out.name,
            image.len() / 1024,
            if sent { " sent" } else { " already cached" },
            out.devices,
            out.toolstack_us,
            out.hypervisor_us
        );
        Ok(())
    }
}

/// Reads a console stream from `offset`: the bytes and the new offset, and
/// whether the domain ended.
fn read_console(
    c: &mut Client,
    kind: u16,
    domid: u32,
    offset: u64,
) -> Result<(Vec<u8>, u64, bool, u64), String> {
    let req = ConsoleRead {
        domid,
        max: 4096,
        offset,
    };
    let payload = c.call(kind, &[req.as_bytes()])?;
    let (head, bytes) = split::<ConsoleData>(&payload).ok_or("malformed console data")?;
    if bytes.len() != head.len as usize {
        return Err("malformed console data".into());
    }
    Ok((
        bytes.to_vec(),
        head.start + u64::from(head.len),
        head.ended != 0,
        head.end,
    ))
}

fn dmesg(c: &mut Client) -> Result<(), String> {
    let mut offset = 0;
    let mut out = std::io::stdout().lock();
    loop {
        let (bytes, next, _, end) = read_console(c, KIND_DMESG, 0, offset)?;
        out.write_all(&bytes).map_err(|e| e.to_string())?;
        offset = next;
        if bytes.is_empty() || offset >= end {
            return Ok(());
        }
    }
}

/// Restores the terminal mode `stty -g` printed, when dropped.
struct RawTerminal(Option<String>);

impl RawTerminal {
    fn enter() -> Self {
        if !std::io::stdin().is_terminal() {
            return Self(None);
        }
        let saved = std::process::Command::new("stty")
            .arg("-g")
            .stdin(std::process::Stdio::inherit())
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned());
        let _ = std::process::Command::new("stty")
            .args(["raw", "-echo"])
            .stdin(std::process::Stdio::inherit())
            .status();
        Self(saved)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            let _ = std::process::Command::new("stty")
                .arg(saved)
                .stdin(std::process::Stdio::inherit())
                .status();
        }
    }
}

/// Ctrl-]: detaches from a console, as in xl.
const DETACH: u8 = 0x1d;

fn console(c: &mut Client, target: &str, once: bool) -> Result<(), String> {
    let domid = resolve_domain(c, target)?;
    let mut offset = 0;
    let mut out = std::io::stdout().lock();
    if once {
        loop {
            let (bytes, next, _, end) = read_console(c, KIND_CONSOLE_READ, domid, offset)?;
            out.write_all(&bytes).map_err(|e| e.to_string())?;
            offset = next;
            if bytes.is_empty() || offset >= end {
                return Ok(());
            }
        }
    }
    eprintln!("pvctl: attached to domain {domid}'s console; Ctrl-] detaches\r");
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let _raw = RawTerminal::enter();
    loop {
        let (bytes, next, ended, _) = read_console(c, KIND_CONSOLE_READ, domid, offset)?;
        offset = next;
        // Raw mode: a bare \n does not return the carriage.
        let text = String::from_utf8_lossy(&bytes).replace('\n', "\r\n");
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        if ended {
            eprint!("\r\npvctl: domain {domid} ended\r\n");
            return Ok(());
        }
        let mut input = Vec::new();
        while let Ok(chunk) = rx.try_recv() {
            input.extend(chunk);
        }
        if let Some(at) = input.iter().position(|&b| b == DETACH) {
            input.truncate(at);
            if !input.is_empty() {
                send_input(c, domid, &input)?;
            }
            eprint!("\r\npvctl: detached\r\n");
            return Ok(());
        }
        if !input.is_empty() {
            send_input(c, domid, &input)?;
        }
        if bytes.is_empty() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn send_input(c: &mut Client, domid: u32, input: &[u8]) -> Result<(), String> {
    let r = DomRef { domid, pad: 0 };
    c.call(KIND_CONSOLE_WRITE, &[r.as_bytes(), input]).map(drop)
}

fn top(c: &mut Client, args: &TopArgs, json: bool) -> Result<(), String> {
    let iterations = if args.once { Some(1) } else { args.iterations };
    let delay = Duration::from_secs_f64(args.delay.clamp(0.05, 3600.0));
    let clear = std::io::stdout().is_terminal() && !json && iterations != Some(1);
    let (mut head, mut before) = list(c)?;
    let mut done = 0u64;
    loop {
        let started = Instant::now();
        std::thread::sleep(delay.saturating_sub(started.elapsed()));
        let (now_head, now) = list(c)?;
        let rows = output::with_rates(&before, &now, now_head.now_ns.saturating_sub(head.now_ns));
        let host = info(c)?;
        if json {
            print_json(&rows)?;
        } else {
            if clear {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", output::top_table(&rows, &host));
        }
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        (head, before) = (now_head, now);
        done += 1;
        if iterations.is_some_and(|n| done >= n) {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn create_takes_a_config_and_flags() {
        let cli = Cli::try_parse_from([
            "pvctl",
            "--socket",
            "/s",
            "create",
            "a.toml",
            "--name",
            "x",
            "--disk",
            "gpt:1",
            "--disk",
            "whole:ro",
            "--nic",
            "02:00:00:00:00:01",
            "--mem",
            "8",
        ])
        .expect("parses");
        let Command::Create(args) = cli.command else {
            panic!("not create")
        };
        assert_eq!(args.config.as_deref(), Some(Path::new("a.toml")));
        assert_eq!(args.disks, ["gpt:1", "whole:ro"]);
        assert_eq!(args.memory, Some(8));
        let cli = Cli::try_parse_from(["pvctl", "top", "--once", "--json"]).expect("top");
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Top(TopArgs { once: true, .. })
        ));
    }

    #[test]
    fn a_missing_image_is_one_line_naming_the_file() {
        let err = load_image(Path::new("/nonexistent/image.elf")).expect_err("missing");
        assert!(
            err.starts_with("cannot read image /nonexistent/image.elf: "),
            "{err}"
        );
        assert!(!err.contains('\n'));
    }
}
