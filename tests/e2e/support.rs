//! Test rig of the end-to-end suite: the built binaries, a control-plane process guard, a FUSE
//! mount guard that never leaves a mount behind, deadline-polling waits and errno assertions.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use grantfs::api::{CreateTicket, Session, TicketIssued};
use grantfs::client::Client;
use grantfs::{SessionId, Timestamp};
use tempfile::TempDir;

/// Returns early (skipping the test loudly) when FUSE is unavailable; `REQUIRE_FUSE=1` turns the
/// skip into a failure.
macro_rules! require_fuse {
    () => {
        if !support::fuse_available() {
            return;
        }
    };
}

pub fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var("REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("/dev/fuse is missing and REQUIRE_FUSE=1: this suite needs a FUSE-capable host");
    }
    eprintln!("SKIPPED: /dev/fuse is missing; set REQUIRE_FUSE=1 to make this a failure");
    false
}

/// A built binary of the workspace.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let target = if target.is_absolute() {
        target
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(target)
    };
    let p = target.join("debug").join(name);
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --workspace --bins` before `cargo test --test e2e`",
        p.display()
    );
    p
}

/// Polls `f` every few milliseconds until it yields `Some`, or panics naming `what` at the deadline.
pub fn wait_for<T>(what: &str, within: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The errno of a failed call, with a readable panic when it succeeded.
#[track_caller]
pub fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) {
    match r {
        Ok(v) => panic!("{what}: expected errno {errno}, but it succeeded with {v:?}"),
        Err(e) => assert_eq!(
            e.raw_os_error(),
            Some(errno),
            "{what}: expected errno {errno}, got {e}"
        ),
    }
}

pub fn errno_of<T>(r: &io::Result<T>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}

pub fn signal(pid: u32, sig: i32) {
    // SAFETY: plain kill(2) of a pid this suite started (or the agent it reported).
    unsafe { libc::kill(pid as i32, sig) };
}

pub fn pid_alive(pid: u32) -> bool {
    // A zombie still answers kill(0); look at its state instead.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => !s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Whether anything is mounted exactly at `path` (per /proc/self/mountinfo).
pub fn is_mounted(path: &Path) -> bool {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .is_some_and(|mp| unescape(mp) == path.to_string_lossy())
    })
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// A control-plane process on its own state dir; killed on drop (continued first if stopped).
pub struct Control {
    pub state: TempDir,
    pub url: String,
    pub port: u16,
    pub keepalive: u64,
    child: Option<Child>,
    stopped: bool,
    rt: tokio::runtime::Runtime,
    pub client: Client,
    pub key: String,
}

impl Control {
    pub fn start() -> Self {
        Self::start_with_keepalive(1)
    }

    pub fn start_with_keepalive(keepalive: u64) -> Self {
        let state = tempfile::Builder::new()
            .prefix("grantfs-control-")
            .tempdir()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let child = spawn_control(state.path(), "127.0.0.1:0", None, keepalive);
        let url = read_addr(state.path());
        let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
        let key = fs::read_to_string(state.path().join("admin.key"))
            .unwrap()
            .trim()
            .to_owned();
        let client = Client::new(&url, Some(key.clone())).unwrap();
        let c = Control {
            state,
            url,
            port,
            keepalive,
            child: Some(child),
            stopped: false,
            rt,
            client,
            key,
        };
        c.wait_healthy();
        c
    }

    fn wait_healthy(&self) {
        wait_for(
            "the control plane to answer /healthz",
            Duration::from_secs(10),
            || self.block(self.client.healthz()).ok(),
        );
    }

    /// Runs one client call to completion.
    pub fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("control is not running").id()
    }

    pub fn sigstop(&mut self) {
        signal(self.pid(), libc::SIGSTOP);
        self.stopped = true;
    }

    pub fn sigcont(&mut self) {
        if self.stopped {
            signal(self.pid(), libc::SIGCONT);
            self.stopped = false;
        }
    }

    /// kill -9, as a crash would.
    pub fn kill9(&mut self) {
        self.sigcont();
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same state dir, port and public URL.
    pub fn restart(&mut self) {
        self.kill9();
        let _ = fs::remove_file(self.state.path().join("control.addr"));
        let listen = format!("127.0.0.1:{}", self.port);
        self.child = Some(spawn_control(
            self.state.path(),
            &listen,
            Some(&self.url),
            self.keepalive,
        ));
        assert_eq!(read_addr(self.state.path()), self.url);
        // Pooled connections died with the old process.
        self.client = Client::new(&self.url, Some(self.key.clone())).unwrap();
        self.wait_healthy();
    }

    /// Creates workspace `name` of the admin account; returns its reference `admin/name`.
    pub fn workspace(&self, name: &str) -> String {
        self.block(self.client.create_workspace(name)).unwrap();
        format!("admin/{name}")
    }

    pub fn ticket(
        &self,
        workspace: &str,
        tenant: &str,
        runtime: &str,
        mode: &str,
        ttl: i64,
    ) -> TicketIssued {
        self.block(self.client.create_ticket(&CreateTicket {
            tenant_slug: tenant.into(),
            runtime_id: runtime.into(),
            workspace: workspace.into(),
            mode: mode.into(),
            ttl_seconds: ttl,
        }))
        .unwrap()
    }

    /// One value of `GET /metrics` (plain HTTP/1.0, so it works whatever the client pools).
    pub fn metric(&self, name: &str) -> u64 {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("metric {name} missing from /metrics:\n{text}"))
    }

    /// Waits until the agents' event streams are connected (`n` open), so that a revocation
    /// measures the push path rather than the first connect.
    pub fn wait_streams(&self, n: u64) {
        wait_for(
            &format!("{n} event stream(s) open"),
            Duration::from_secs(5),
            || (self.metric("grantfs_event_streams_open") >= n).then_some(()),
        );
    }

    pub fn session(&self, id: &SessionId) -> Session {
        self.block(self.client.get_session(id)).unwrap()
    }
}

fn spawn_control(state: &Path, listen: &str, public_url: Option<&str>, keepalive: u64) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("control.log"))
        .unwrap();
    let mut cmd = Command::new(bin("grantfs-control"));
    cmd.arg("serve")
        .arg("--listen")
        .arg(listen)
        .arg("--state-dir")
        .arg(state)
        .arg("--keepalive-seconds")
        .arg(keepalive.to_string())
        .env_remove("GRANTFS_DATABASE")
        .env_remove("GRANTFS_PUBLIC_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    if let Some(u) = public_url {
        cmd.arg("--public-url").arg(u);
    }
    cmd.spawn().expect("starting grantfs-control")
}

fn read_addr(state: &Path) -> String {
    wait_for("control.addr", Duration::from_secs(10), || {
        fs::read_to_string(state.join("control.addr"))
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    })
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One test's host side: a data root, a runtime dir for mount records, and room for mountpoints.
pub struct Host {
    pub dir: TempDir,
    pub data_root: PathBuf,
    pub runtime_dir: PathBuf,
}

impl Host {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("grantfs-e2e-")
            .tempdir()
            .unwrap();
        let data_root = dir.path().join("data");
        let runtime_dir = dir.path().join("run");
        fs::create_dir_all(&data_root).unwrap();
        fs::create_dir_all(&runtime_dir).unwrap();
        Host {
            dir,
            data_root,
            runtime_dir,
        }
    }

    /// A fresh empty directory to mount on.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("mnt").join(name);
        fs::create_dir_all(&p).unwrap();
        p.canonicalize().unwrap()
    }

    /// The backing directory of `admin/<name>`.
    pub fn backing(&self, workspace: &str) -> PathBuf {
        self.data_root.join(workspace)
    }

    pub fn agent(&self) -> Command {
        let mut c = Command::new(bin("grantfs-agent"));
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("GRANTFS_") {
                c.env_remove(k);
            }
        }
        c.env("GRANTFS_RUNTIME_DIR", &self.runtime_dir);
        c
    }

    /// `grantfs-agent mount WORKSPACE MP --ticket-stdin --data-root D --json EXTRA…`, ticket on stdin.
    pub fn mount_cmd(&self, workspace: &str, mp: &Path, ticket: &str, extra: &[&str]) -> Output {
        let mut child = self
            .agent()
            .arg("mount")
            .arg(workspace)
            .arg(mp)
            .arg("--ticket-stdin")
            .arg("--data-root")
            .arg(&self.data_root)
            .arg("--json")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting grantfs-agent");
        {
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(ticket.as_bytes());
        }
        child.wait_with_output().unwrap()
    }

    /// Mounts and returns the guard; panics with the agent's words if the mount is refused.
    pub fn mount(&self, workspace: &str, mp: &Path, ticket: &str, extra: &[&str]) -> Mount {
        let out = self.mount_cmd(workspace, mp, ticket, extra);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "mount of {workspace} at {} failed ({}): {stderr}{}",
            mp.display(),
            out.status,
            self.agent_log(mp)
        );
        let event: serde_json::Value = stdout
            .lines()
            .find_map(|l| serde_json::from_str(l).ok())
            .unwrap_or_else(|| panic!("no JSON event on stdout: {stdout:?}"));
        assert_eq!(event["event"], "mounted", "{event}");
        let pid = u32::try_from(event["pid"].as_u64().expect("pid in the mounted event")).unwrap();
        Mount {
            mountpoint: mp.to_owned(),
            runtime_dir: self.runtime_dir.clone(),
            pid,
            event,
        }
    }

    pub fn agent_log(&self, mp: &Path) -> String {
        let name = format!(
            "{}.log",
            mp.to_string_lossy()
                .trim_start_matches('/')
                .replace('/', "_")
        );
        fs::read_to_string(self.runtime_dir.join("logs").join(name))
            .map(|s| format!("\nagent log:\n{s}"))
            .unwrap_or_default()
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.agent().args(["status", "--json"]).output().unwrap();
        assert!(
            out.status.success(),
            "status --json: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// A live mount held by a detached agent. Drop unmounts it through the agent, falling back to a
/// lazy unmount and killing the agent, so no mount or process outlives the test, even on panic.
pub struct Mount {
    pub mountpoint: PathBuf,
    runtime_dir: PathBuf,
    pub pid: u32,
    pub event: serde_json::Value,
}

impl Mount {
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn session_id(&self) -> SessionId {
        SessionId::from_string(self.event["session_id"].as_str().unwrap().to_owned())
    }

    pub fn expires_at(&self) -> Timestamp {
        Timestamp::parse_rfc3339(self.event["expires_at"].as_str().unwrap()).unwrap()
    }

    /// `grantfs-agent unmount MP`.
    pub fn unmount_cmd(&self) -> Output {
        Command::new(bin("grantfs-agent"))
            .arg("unmount")
            .arg(&self.mountpoint)
            .env("GRANTFS_RUNTIME_DIR", &self.runtime_dir)
            .output()
            .unwrap()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.mountpoint) {
            let _ = self.unmount_cmd();
        }
        if is_mounted(&self.mountpoint) {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mountpoint)
                .status();
        }
        if pid_alive(self.pid) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while pid_alive(self.pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if pid_alive(self.pid) {
                signal(self.pid, libc::SIGKILL);
            }
        }
        if is_mounted(&self.mountpoint) && !std::thread::panicking() {
            panic!(
                "{} is still mounted after cleanup",
                self.mountpoint.display()
            );
        }
    }
}

/// Milliseconds from now until `t` (negative when past).
pub fn ms_until(t: Timestamp) -> i64 {
    t.millis() - Timestamp::now().millis()
}

/// Sorted percentile of durations (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
