//! The processes and the mount the chaos suite drives: webhookd (release
//! binary, restarted on the same port and data), an external nats-server
//! (restarted on the same port and store), and a size-limited tmpfs.
//!
//! Each lives in the benchmark's [`ChildGuard`] (SIGTERM, bounded wait,
//! SIGKILL, PDEATHSIG) or in a guard of its own here, so everything is
//! stopped and unmounted also on an error or a panic.

use std::ffi::{CString, OsString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::load::{self, now_us, Conn};
use crate::procs::{self, ChildGuard};

/// What happened to a process, and when (µs since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    WebhookdKill,
    WebhookdTerm,
    WebhookdStop,
    WebhookdCont,
    WebhookdStarted,
    NatsKill,
    NatsStarted,
    DiskFull,
    DiskFreed,
}

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub at_us: u64,
    pub fault: Fault,
}

fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    if pid == 0 {
        bail!("no process to signal");
    }
    // SAFETY: kill(2) on a pid we started (or just read from /proc).
    if unsafe { libc::kill(pid as libc::pid_t, sig) } != 0 {
        return Err(std::io::Error::last_os_error()).context("kill(2)");
    }
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Waits until `pid` is gone (or a zombie); false after `limit`.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let until = Instant::now() + limit;
    while alive(pid) {
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A webhookd process on a fixed port and data directory, restartable.
pub struct Webhookd {
    guard: Option<ChildGuard>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    pub db: PathBuf,
    pub log: PathBuf,
    bin: PathBuf,
    nats_bin: PathBuf,
    nats_url: Option<String>,
    args: Vec<OsString>,
    stopped: bool,
    pub events: Vec<Event>,
}

impl Webhookd {
    /// Describes (does not start) a webhookd on `data_dir`.
    pub fn new(
        bin: &Path,
        nats_bin: &Path,
        data_dir: &Path,
        database: Option<&Path>,
        nats_url: Option<String>,
        args: &[&str],
    ) -> Result<Webhookd> {
        let port = procs::free_port()?;
        let db = database
            .map(Path::to_path_buf)
            .unwrap_or_else(|| data_dir.join("webhookd.db"));
        let mut all: Vec<OsString> = vec!["--database".into(), db.clone().into()];
        all.extend(args.iter().map(OsString::from));
        Ok(Webhookd {
            guard: None,
            addr: ([127, 0, 0, 1], port).into(),
            data_dir: data_dir.to_path_buf(),
            db,
            log: data_dir.join("webhookd.log"),
            bin: bin.to_path_buf(),
            nats_bin: nats_bin.to_path_buf(),
            nats_url,
            args: all,
            stopped: false,
            events: Vec::new(),
        })
    }

    fn note(&mut self, fault: Fault) {
        self.events.push(Event {
            at_us: now_us(),
            fault,
        });
    }

    /// The process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.guard.as_ref().map(ChildGuard::pid).unwrap_or(0)
    }

    /// Starts the process and waits until /readyz answers 200.
    pub async fn start(&mut self) -> Result<()> {
        if self.guard.is_some() {
            bail!("webhookd is already running");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("opening {}", self.log.display()))?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--nats-server-bin")
            .arg(&self.nats_bin)
            .args(["--allow-targets", "127.0.0.0/8", "--log", "warn"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log);
        match &self.nats_url {
            Some(url) => cmd.env("NATS_URL", url),
            None => cmd.env_remove("NATS_URL"),
        };
        self.guard = Some(ChildGuard::spawn("webhookd", &mut cmd)?);
        self.stopped = false;
        self.wait_ready(Duration::from_secs(60)).await?;
        if self.nats_url.is_none() {
            let marker = self.data_dir.to_string_lossy().into_owned();
            if let (Some(pid), Some(g)) = (self.nats_pid(), self.guard.as_mut()) {
                g.add_follower(pid, &marker);
            }
        }
        self.note(Fault::WebhookdStarted);
        Ok(())
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let (addr, log) = (self.addr, self.log.clone());
        load::wait_ready(addr, &log, limit, || self.exited()).await
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.guard.as_mut().and_then(ChildGuard::exited)
    }

    /// Fails if the process is not running.
    pub fn ensure_alive(&mut self) -> Result<()> {
        if self.guard.is_none() {
            bail!("webhookd is not running");
        }
        match self.exited() {
            Some(status) => bail!(
                "webhookd exited unexpectedly ({status}):\n{}",
                procs::tail(&self.log, 30)
            ),
            None => Ok(()),
        }
    }

    /// The embedded nats-server child (its command line names the data dir).
    pub fn nats_pid(&self) -> Option<u32> {
        let marker = self.data_dir.to_string_lossy().into_owned();
        procs::find_child(self.pid(), &marker)
    }

    /// Also stops the current embedded nats-server if webhookd cannot
    /// (after a restart of the child, its pid changed).
    pub fn track_nats(&mut self) {
        let marker = self.data_dir.to_string_lossy().into_owned();
        if let (Some(pid), Some(g)) = (self.nats_pid(), self.guard.as_mut()) {
            g.add_follower(pid, &marker);
        }
    }

    /// kill -9 webhookd, reap it, and wait until its embedded nats-server
    /// (which gets SIGTERM through PDEATHSIG) is gone, as a supervisor
    /// restarting the service would. Returns how long that took.
    pub fn kill9(&mut self) -> Result<Duration> {
        let nats = self.nats_pid();
        let pid = self.pid();
        signal(pid, libc::SIGKILL)?;
        self.note(Fault::WebhookdKill);
        let t0 = Instant::now();
        if let Some(mut g) = self.guard.take() {
            g.stop(Duration::from_secs(5));
        }
        if let Some(nats) = nats {
            if !wait_gone(nats, Duration::from_secs(20)) {
                eprintln!("chaos: embedded nats-server {nats} still alive 20 s after webhookd died; killing it");
                let _ = signal(nats, libc::SIGKILL);
                wait_gone(nats, Duration::from_secs(5));
            }
        }
        Ok(t0.elapsed())
    }

    /// SIGTERM and wait for the graceful stop. Returns the exit status and
    /// how long the stop took.
    pub fn term(&mut self, limit: Duration) -> Result<(Option<ExitStatus>, Duration)> {
        if self.stopped {
            self.cont()?;
        }
        let nats = self.nats_pid();
        self.note(Fault::WebhookdTerm);
        let t0 = Instant::now();
        let status = match self.guard.take() {
            Some(mut g) => g.stop(limit),
            None => bail!("webhookd is not running"),
        };
        if let Some(nats) = nats {
            wait_gone(nats, Duration::from_secs(15));
        }
        Ok((status, t0.elapsed()))
    }

    /// SIGSTOP.
    pub fn stop_signal(&mut self) -> Result<()> {
        signal(self.pid(), libc::SIGSTOP)?;
        self.stopped = true;
        self.note(Fault::WebhookdStop);
        Ok(())
    }

    /// SIGCONT.
    pub fn cont(&mut self) -> Result<()> {
        signal(self.pid(), libc::SIGCONT)?;
        self.stopped = false;
        self.note(Fault::WebhookdCont);
        Ok(())
    }

    /// Creates a subscription to `target`; returns its id.
    pub async fn subscribe(&self, target: SocketAddr) -> Result<String> {
        let mut conn = Conn::connect(self.addr).await?;
        let body = serde_json::json!({"target_url": format!("http://{target}/hook")}).to_string();
        let (status, answer) = conn.post_json("/subscriptions", body).await?;
        if status.as_u16() != 201 {
            bail!(
                "creating a subscription: {status} {}",
                String::from_utf8_lossy(&answer)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&answer)?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("no id in {v}"))
    }
}

impl Drop for Webhookd {
    fn drop(&mut self) {
        if self.stopped {
            let _ = signal(self.pid(), libc::SIGCONT);
        }
        // The guard's own Drop stops the process, then its nats-server.
    }
}

/// An external nats-server with JetStream on a fixed loopback port.
pub struct Nats {
    guard: Option<ChildGuard>,
    pub port: u16,
    store: PathBuf,
    log: PathBuf,
    bin: PathBuf,
    pub events: Vec<Event>,
}

impl Nats {
    /// Starts a server with its store under `dir`.
    pub async fn start(bin: &Path, dir: &Path) -> Result<Nats> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut nats = Nats {
            guard: None,
            port: procs::free_port()?,
            store: dir.join("store"),
            log: dir.join("nats-server.log"),
            bin: bin.to_path_buf(),
            events: Vec::new(),
        };
        nats.spawn().await?;
        Ok(nats)
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(&self.store)
            .arg("-l")
            .arg(&self.log)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut guard = ChildGuard::spawn("nats-server", &mut cmd)?;
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = guard.exited() {
                bail!(
                    "nats-server exited at start ({status}):\n{}",
                    procs::tail(&self.log, 10)
                );
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                break;
            }
            if Instant::now() > until {
                bail!(
                    "nats-server not listening on port {} within 20 s",
                    self.port
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.guard = Some(guard);
        self.events.push(Event {
            at_us: now_us(),
            fault: Fault::NatsStarted,
        });
        Ok(())
    }

    /// kill -9.
    pub fn kill9(&mut self) -> Result<()> {
        let mut g = self.guard.take().context("nats-server is not running")?;
        signal(g.pid(), libc::SIGKILL)?;
        self.events.push(Event {
            at_us: now_us(),
            fault: Fault::NatsKill,
        });
        g.stop(Duration::from_secs(5));
        Ok(())
    }

    /// Starts again on the same port and store.
    pub async fn restart(&mut self) -> Result<()> {
        if self.guard.is_some() {
            bail!("nats-server is still running");
        }
        self.spawn().await
    }
}

/// Makes this process's mounts private to it: a tmpfs mounted later
/// disappears with the process even if it is killed before it unmounts.
/// Must run before any thread is started. Returns whether it worked.
pub fn private_mount_namespace() -> bool {
    // SAFETY: plain syscalls with constant arguments, single-threaded here.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let root = CString::new("/").expect("static");
        libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) == 0
    }
}

/// A tmpfs of a given size, unmounted when dropped.
pub struct Tmpfs {
    pub dir: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "2m") on `dir` (created).
    pub fn mount(dir: &Path, size: &str) -> Result<Tmpfs> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            bail!("not running as root");
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let target = CString::new(dir.as_os_str().as_encoded_bytes()).context("mount point")?;
        let fstype = CString::new("tmpfs").expect("static");
        let options = CString::new(format!("size={size},mode=0755")).context("options")?;
        // SAFETY: valid C strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("mount -t tmpfs -o size={size} tmpfs {}", dir.display()));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts (lazily if busy).
    pub fn unmount(&mut self) {
        if !self.mounted {
            return;
        }
        if let Ok(target) = CString::new(self.dir.as_os_str().as_encoded_bytes()) {
            // SAFETY: a valid C string; umount2 touches nothing else.
            unsafe {
                if libc::umount2(target.as_ptr(), 0) != 0 {
                    libc::umount2(target.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
        self.mounted = false;
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// Writes `path` in 64 KiB chunks until the file system is full (ENOSPC);
/// returns the bytes written.
pub fn fill_until_enospc(path: &Path) -> Result<u64> {
    use std::io::Write;
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let chunk = vec![0x5au8; 64 * 1024];
    let mut written = 0u64;
    // Bounded: a tmpfs of a few MiB fills long before this.
    for _ in 0..65_536 {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => return Err(e).context("writing the filler"),
        }
    }
    // Small writes for the last partial chunk's worth of space.
    for _ in 0..16_384 {
        match f.write(&chunk[..256]) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.sync_all();
    Ok(written)
}
