//! The `toolstack` and `toolstack-bench` host drivers: they run the real
//! `pvctl` binary against the machine's management socket, as an operator
//! would, and check what it answers and what the serial console shows.
//!
//! `toolstack`: 50 guests from one config (the image goes over the line
//! once), listed, watched (CPU time grows; pause stops it), destroyed, free
//! memory back to the baseline to the frame; bad input refused with one
//! line each and nothing left behind; a guest destroyed in the middle of
//! disk and net I/O, then a new one whose I/O works; `pvctl poweroff`.
//!
//! `toolstack-bench`: 10 minimal guests created one after the other, each
//! destroyed after its first console line; the driver domain then prints the
//! create-time figures (`pvctl bench-report`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Session;

type Result<T> = std::result::Result<T, String>;

/// How many guests the scale test creates.
const GUESTS: usize = 50;

/// Runs `pvctl` with the session's socket.
struct Pvctl<'a> {
    bin: PathBuf,
    socket: PathBuf,
    session: &'a Session,
}

/// A finished `pvctl` run.
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl<'a> Pvctl<'a> {
    fn new(session: &'a Session) -> Result<Self> {
        let bin = session.root.join("target/host/debug/pvctl");
        if !bin.is_file() {
            return Err(format!(
                "{} is missing (cargo xtask builds it)",
                bin.display()
            ));
        }
        Ok(Self {
            bin,
            socket: session.scratch.join("mgmt.sock"),
            session,
        })
    }

    fn run(&self, args: &[&str]) -> Result<Ran> {
        if self.session.ended() {
            return Err(format!("QEMU ended before `pvctl {}`", args.join(" ")));
        }
        let out = Command::new(&self.bin)
            .args(args)
            .env("PVCTL_SOCKET", &self.socket)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run pvctl: {e}"))?;
        Ok(Ran {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs and requires success; returns stdout.
    fn ok(&self, args: &[&str]) -> Result<String> {
        let ran = self.run(args)?;
        if ran.ok {
            Ok(ran.stdout)
        } else {
            Err(format!("pvctl {}: {}", args.join(" "), ran.stderr.trim()))
        }
    }

    /// Runs with `--json` and parses the output.
    fn json(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ok(&all)?;
        serde_json::from_str(&out)
            .map_err(|e| format!("pvctl {}: bad JSON ({e}): {out}", args.join(" ")))
    }

    /// Runs, requires failure with exactly one stderr line containing
    /// `want`; returns that line.
    fn refused(&self, args: &[&str], want: &str) -> Result<String> {
        let ran = self.run(args)?;
        let lines: Vec<&str> = ran.stderr.lines().collect();
        if ran.ok {
            return Err(format!(
                "pvctl {} succeeded; it should have failed",
                args.join(" ")
            ));
        }
        match lines.as_slice() {
            [line] if line.contains(want) => Ok((*line).to_owned()),
            _ => Err(format!(
                "pvctl {}: expected one line with `{want}`, got: {}",
                args.join(" "),
                ran.stderr.trim()
            )),
        }
    }

    fn free_pages(&self) -> Result<u64> {
        let info = self.json(&["info"])?;
        info["free_pages"]
            .as_u64()
            .ok_or_else(|| format!("info without free_pages: {info}"))
    }

    fn list(&self) -> Result<Vec<Value>> {
        match self.json(&["list"])? {
            Value::Array(rows) => Ok(rows),
            other => Err(format!("list is not an array: {other}")),
        }
    }

    fn create(&self, args: &[&str]) -> Result<Value> {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        self.json(&all)
    }

    /// Waits until the free pages are `baseline` again and no domain other
    /// than boot-time ones is listed.
    fn back_to_baseline(&self, baseline: u64, what: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let free = self.free_pages()?;
            let managed = self
                .list()?
                .iter()
                .filter(|r| r["managed"].as_bool() == Some(true))
                .count();
            if free == baseline && managed == 0 {
                self.session.note(format!(
                    "{what}: no toolstack domain left, free pages {free} = baseline"
                ));
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{what}: free pages {free}, baseline {baseline} ({} frames leaked), {managed} toolstack domains left",
                    baseline as i64 - free as i64
                ));
            }
            thread::sleep(Duration::from_millis(300));
        }
    }
}

fn guest_image(s: &Session, bin: &str) -> PathBuf {
    s.root
        .join("target/guest/x86_64-unknown-none/release")
        .join(bin)
}

fn domid(created: &Value) -> Result<u64> {
    created["domid"]
        .as_u64()
        .ok_or_else(|| format!("create answered without a domid: {created}"))
}

/// Waits until every domain of `ids` printed a line containing `text`.
fn wait_for_lines(s: &Session, ids: &[u64], text: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let serial = s.serial();
        let missing: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| {
                let prefix = format!("(d{id}) {text}");
                !serial.lines().any(|l| l.starts_with(&prefix))
            })
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if s.ended() || Instant::now() >= deadline {
            return Err(format!(
                "{} domains never printed `{text}` (e.g. d{})",
                missing.len(),
                missing[0]
            ));
        }
        thread::sleep(Duration::from_millis(200));
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn cpu_of(rows: &[Value], id: u64) -> Option<u64> {
    rows.iter()
        .find(|r| r["id"].as_u64() == Some(id))
        .and_then(|r| r["cpu_ns"].as_u64())
}

/// The `toolstack` scenario.
pub fn drive(s: &Session) -> Result<()> {
    s.wait_for(
        "toolstack: serving management protocol",
        Duration::from_secs(120),
    )?;
    let p = Pvctl::new(s)?;
    let info = p.ok(&["info"])?;
    for line in info.lines() {
        s.note(format!("info: {line}"));
    }
    let baseline = p.free_pages()?;
    half_sent_frame(s, &p)?;
    let ticker = guest_image(s, "ticker");
    let config = s.scratch.join("tiny.toml");
    write(
        &config,
        &format!(
            "# A tiny guest: one line, then a cheap heartbeat.\nname = \"tiny\"\nimage = \"{}\"\nmemory = 2\nvcpus = 1\ncmdline = \"beat=200 print=0\"\n",
            ticker.display()
        ),
    )?;
    let config = config.display().to_string();

    // 50 guests from one config; the image goes over the line once.
    let started = Instant::now();
    let mut ids = Vec::new();
    for i in 1..=GUESTS {
        let name = format!("tiny-{i}");
        let created = p.create(&[&config, "--name", &name])?;
        let sent = created["image_sent"].as_bool();
        if sent != Some(i == 1) {
            return Err(format!(
                "create {name}: image_sent = {sent:?}, expected {}",
                i == 1
            ));
        }
        ids.push(domid(&created)?);
    }
    s.note(format!(
        "created {GUESTS} guests from {} in {:.1} s (the image was sent once)",
        config,
        started.elapsed().as_secs_f64()
    ));
    wait_for_lines(s, &ids, "ticker: up", Duration::from_secs(180))?;
    s.note(format!("all {GUESTS} guests printed their first line"));
    let first = p.list()?;
    for id in &ids {
        let row = first
            .iter()
            .find(|r| r["id"].as_u64() == Some(*id))
            .ok_or_else(|| format!("list misses d{id}"))?;
        if row["state"] != "running" || row["managed"] != true {
            return Err(format!("list: d{id} is {row}"));
        }
    }
    let table = p.ok(&["list"])?;
    for line in table.lines().take(4) {
        s.note(format!("list: {line}"));
    }
    s.note(format!(
        "list: … {} rows, all {GUESTS} guests running",
        first.len()
    ));

    // Watch them run; a paused one does not.
    let paused = ids[1].to_string();
    p.ok(&["pause", &paused])?;
    let before = p.list()?;
    thread::sleep(Duration::from_secs(3));
    let after = p.list()?;
    for id in &ids {
        let (a, b) = (cpu_of(&before, *id), cpu_of(&after, *id));
        let grew = matches!((a, b), (Some(a), Some(b)) if b > a);
        if *id == ids[1] {
            if grew
                || after
                    .iter()
                    .find(|r| r["id"].as_u64() == Some(*id))
                    .map(|r| &r["state"])
                    != Some(&Value::from("paused"))
            {
                return Err(format!("paused d{id}: cpu {a:?} -> {b:?}"));
            }
        } else if !grew {
            return Err(format!("d{id}: CPU time did not grow ({a:?} -> {b:?})"));
        }
    }
    p.ok(&["unpause", &paused])?;
    s.note(format!(
        "over 3 s every guest's CPU time grew except the paused d{} (unpaused again)",
        ids[1]
    ));
    let top = p.ok(&["top", "--once", "--delay", "0.5"])?;
    for line in top.lines().take(4) {
        s.note(format!("top: {line}"));
    }
    let console = p.ok(&["console", "tiny-1", "--once"])?;
    if !console.contains("ticker: up") {
        return Err(format!("console tiny-1: {console:?}"));
    }
    s.note(format!(
        "console tiny-1: {:?}",
        console.lines().next().unwrap_or("")
    ));
    for id in &ids {
        p.ok(&["destroy", &id.to_string()])?;
    }
    s.note(format!("destroyed all {GUESTS}"));
    p.back_to_baseline(baseline, "after destroying the 50")?;

    console_attach(s, &p, &config)?;
    bad_input(s, &p, &config, &ticker, baseline)?;
    io_destroy(s, &p, &ticker, baseline)?;

    p.ok(&["poweroff"])?;
    s.note("pvctl poweroff");
    s.wait_for("(hv) d0 'driver': shut down", Duration::from_secs(60))?;
    Ok(())
}

/// A client that sends noise and half a frame and goes away does not wedge
/// the next one (MGMT-2): the driver domain drops the partial frame once the
/// line is quiet, and the next `pvctl` (whose first `HELLO` may vanish into
/// that frame) is answered once it says hello again.
fn half_sent_frame(s: &Session, p: &Pvctl<'_>) -> Result<()> {
    use hypercall_abi::mgmt::{encode_frame, KIND_CREATE, MAX_FRAME};
    use std::io::Write;
    let mut frame = vec![0u8; MAX_FRAME];
    let n = encode_frame(KIND_CREATE, 7, &[&[0x5a; 3000]], &mut frame)
        .map_err(|e| format!("encode: {e:?}"))?;
    {
        let mut stream = std::os::unix::net::UnixStream::connect(&p.socket)
            .map_err(|e| format!("cannot connect to {}: {e}", p.socket.display()))?;
        stream
            .write_all(b"noise PVMG noise")
            .and_then(|()| stream.write_all(&frame[..n.min(1000)]))
            .map_err(|e| format!("cannot write the half frame: {e}"))?;
        // Let the driver domain take the bytes before the client goes away.
        thread::sleep(Duration::from_millis(300));
    }
    let started = Instant::now();
    p.ok(&["list"])?;
    s.note(format!(
        "a client sent noise and 1000 bytes of a 3024-byte frame and went away; the next pvctl was answered {:.1} s later",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `pvctl console` attached to a guest that echoes its input: what is typed
/// reaches the guest, its output comes back, Ctrl-] detaches.
fn console_attach(s: &Session, p: &Pvctl<'_>, config: &str) -> Result<()> {
    use std::io::{Read, Write};
    let id = domid(&p.create(&[config, "--name", "echo", "--cmdline", "beat=100 echo=1"])?)?;
    wait_for_lines(s, &[id], "ticker: up", Duration::from_secs(60))?;
    let mut child = Command::new(&p.bin)
        .args(["console", "echo"])
        .env("PVCTL_SOCKET", &p.socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run pvctl console: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(b"hello from the host\n")
        .map_err(|e| format!("pvctl console stdin: {e}"))?;
    let echoed = s.wait_for(
        &format!("(d{id}) ticker: got \"hello from the host\""),
        Duration::from_secs(30),
    );
    // Ctrl-] detaches (sent even if the echo did not come, so pvctl ends).
    let _ = stdin.write_all(&[0x1d]);
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            return Err("pvctl console did not detach on Ctrl-]".into());
        }
        thread::sleep(Duration::from_millis(100));
    };
    echoed?;
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    if !status.success()
        || !out.contains("ticker: got \"hello from the host\"")
        || !err.contains("detached")
    {
        return Err(format!(
            "pvctl console: status {status}, output {out:?}, stderr {err:?}"
        ));
    }
    s.note("console: typed a line into `pvctl console echo`, the guest echoed it, Ctrl-] detached");
    p.ok(&["destroy", &id.to_string()])?;
    Ok(())
}

/// Each bad input is one clear line and leaves nothing behind.
fn bad_input(s: &Session, p: &Pvctl<'_>, config: &str, ticker: &Path, baseline: u64) -> Result<()> {
    let scratch = &s.scratch;
    let not_elf = scratch.join("not-elf.bin");
    std::fs::write(&not_elf, paravane_tests::elf_mutations::not_elf(Vec::new()))
        .map_err(|e| format!("cannot write {}: {e}", not_elf.display()))?;
    let bad_key = scratch.join("bad-key.toml");
    write(
        &bad_key,
        &format!(
            "name = \"bad\"\nimage = \"{}\"\nmemroy = 4\n",
            ticker.display()
        ),
    )?;
    let missing = scratch.join("no-such-image.elf");
    let abi = guest_image(s, "abi-mismatch");
    let ticker_s = ticker.display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "create".into(),
                "--image".into(),
                missing.display().to_string(),
                "--name".into(),
                "bad-1".into(),
            ],
            "cannot read image",
        ),
        (
            vec![
                "create".into(),
                "--image".into(),
                not_elf.display().to_string(),
                "--name".into(),
                "bad-2".into(),
            ],
            "not an ELF file",
        ),
        (
            vec![
                "create".into(),
                "--image".into(),
                abi.display().to_string(),
                "--name".into(),
                "bad-3".into(),
            ],
            "is not supported",
        ),
        (
            vec![
                "create".into(),
                "--image".into(),
                ticker_s.clone(),
                "--name".into(),
                "bad-4".into(),
                "--mem".into(),
                "100000".into(),
            ],
            "not enough free memory",
        ),
        (
            vec!["create".into(), bad_key.display().to_string()],
            "unknown key `memroy`",
        ),
        (
            vec![
                "create".into(),
                "--image".into(),
                ticker_s.clone(),
                "--name".into(),
                "bad-6".into(),
                "--mem".into(),
                "2".into(),
                "--disk".into(),
                "gpt:3".into(),
            ],
            "disk gpt:3: no such GPT partition",
        ),
    ];
    for (args, want) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let line = p.refused(&args, want)?;
        s.note(format!("refused: {line}"));
    }
    let dup = p.create(&[config, "--name", "dup"])?;
    let line = p.refused(&["create", config, "--name", "dup"], "already exists")?;
    s.note(format!("refused: {line}"));
    // `shutdown`: the ticker powers itself off when asked.
    let dup = domid(&dup)?;
    p.ok(&["shutdown", "dup"])?;
    s.wait_for(
        &format!("(hv) d{dup} 'dup': shut down (poweroff)"),
        Duration::from_secs(30),
    )?;
    s.note(format!(
        "shutdown: d{dup} 'dup' powered itself off when asked"
    ));
    // A guest that ignores the request is destroyed after the grace time.
    let deaf = domid(&p.create(&[config, "--name", "deaf", "--cmdline", "polite=0"])?)?;
    wait_for_lines(s, &[deaf], "ticker: up", Duration::from_secs(60))?;
    p.ok(&["shutdown", "deaf"])?;
    s.wait_for(
        &format!("toolstack: d{deaf} did not shut down in time: destroyed"),
        Duration::from_secs(30),
    )?;
    s.note(format!(
        "shutdown: d{deaf} 'deaf' ignored the request and was destroyed after 5 s"
    ));
    p.back_to_baseline(baseline, "after the bad input and the shutdowns")
}

/// The number after `key` in `line` (`received` in `… 20 sent, 7 received)`).
fn number_before(line: &str, key: &str) -> Option<u64> {
    let at = line.find(key)?;
    line[..at].split_whitespace().last()?.parse().ok()
}

/// Two guests doing disk and net I/O (each one's broadcasts reach the
/// other through the bridge); one is destroyed in the middle of it. The
/// other keeps going, and a new guest's disk and net I/O works through the
/// same backends; nothing is leaked.
fn io_destroy(s: &Session, p: &Pvctl<'_>, ticker: &Path, baseline: u64) -> Result<()> {
    let image = ticker.display().to_string();
    let io_guest = |name: &str, mac: &str, lba: &str| -> Result<u64> {
        domid(&p.create(&[
            "--image",
            &image,
            "--name",
            name,
            "--mem",
            "4",
            "--disk",
            lba,
            "--nic",
            mac,
            "--cmdline",
            "io=1 rounds=30",
        ])?)
    };
    let a = io_guest("io-a", "02:00:00:00:01:0a", "lba:0+2048")?;
    let b = io_guest("io-b", "02:00:00:00:01:0b", "lba:2048+2048")?;
    wait_for_lines(s, &[a, b], "ticker: io running", Duration::from_secs(120))?;
    p.ok(&["destroy", &a.to_string()])?;
    s.note(format!(
        "destroyed io-a (d{a}) in the middle of its disk and net I/O"
    ));
    // Its backends see it die and let go of its rings.
    s.wait_for(&format!("of d{a} closed"), Duration::from_secs(30))?;
    let c = io_guest("io-c", "02:00:00:00:01:0c", "lba:0+2048")?;
    wait_for_lines(
        s,
        &[b, c],
        "ticker: io ok after 30 rounds",
        Duration::from_secs(240),
    )?;
    let serial = s.serial();
    for (name, id) in [("io-b", b), ("io-c", c)] {
        let prefix = format!("(d{id}) ticker: io ok after 30 rounds");
        let line = serial
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_default();
        if number_before(line, "received").is_none_or(|n| n == 0) {
            return Err(format!("{name} received no frame: {line}"));
        }
        s.note(format!(
            "{name} (d{id}): {}",
            line.split(") ").nth(1).unwrap_or(line)
        ));
    }
    for id in [b, c] {
        p.ok(&["destroy", &id.to_string()])?;
    }
    p.back_to_baseline(baseline, "after the I/O guests")
}

/// The `toolstack-bench` scenario.
pub fn bench(s: &Session) -> Result<()> {
    s.wait_for(
        "toolstack: serving management protocol",
        Duration::from_secs(120),
    )?;
    let p = Pvctl::new(s)?;
    let image = guest_image(s, "ticker").display().to_string();
    for i in 1..=10 {
        let name = format!("bench-{i}");
        let created = p.create(&[
            "--image",
            &image,
            "--name",
            &name,
            "--mem",
            "2",
            "--cmdline",
            "print=0",
        ])?;
        let id = domid(&created)?;
        wait_for_lines(s, &[id], "ticker: up", Duration::from_secs(60))?;
        p.ok(&["destroy", &id.to_string()])?;
    }
    let out = p.ok(&["bench-report"])?;
    s.note(out.trim().to_owned());
    s.wait_for("BENCH name=create_hypervisor_us", Duration::from_secs(30))?;
    p.ok(&["poweroff"])?;
    s.wait_for("(hv) d0 'driver': shut down", Duration::from_secs(60))?;
    Ok(())
}
