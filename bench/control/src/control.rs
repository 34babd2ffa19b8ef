//! A `grantfs-control serve` child on 127.0.0.1:0 with a fresh state dir, stopped and removed on
//! drop; plus the process facts the benchmarks read (RSS, open-file limit).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use grantfs::client::Client;

/// A scratch directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(what: &str) -> Result<Self> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "grantfs-bench-{what}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(Self(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The running server.
pub struct Control {
    child: Child,
    pub addr: SocketAddr,
    pub url: String,
    pub api_key: String,
    // Dropped after the child is stopped (fields drop in order, after `Drop::drop`).
    dir: TempDir,
}

impl Control {
    pub fn start(bin: &Path) -> Result<Self> {
        if !bin.is_file() {
            bail!(
                "grantfs-control not found at {} (build it, or pass --control-bin)",
                bin.display()
            );
        }
        let dir = TempDir::new("control")?;
        let state = dir.path().join("state");
        let log = std::fs::File::create(dir.path().join("control.log"))?;
        let child = Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(&state)
            // Capacity is what is measured: the per-key/per-account rate limits are a policy.
            .args(["--rate-limit-tickets", "0", "--rate-limit-exchanges", "0"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut c = Control {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            url: String::new(),
            api_key: String::new(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let addr = std::fs::read_to_string(state.join("control.addr")).unwrap_or_default();
            let key = std::fs::read_to_string(state.join("admin.key")).unwrap_or_default();
            if !addr.trim().is_empty() && !key.trim().is_empty() {
                c.url = addr.trim().to_owned();
                c.api_key = key.trim().to_owned();
                break;
            }
            if let Some(st) = c.child.try_wait()? {
                bail!(
                    "grantfs-control exited at start ({st}); log: {}",
                    c.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "grantfs-control did not start within 20 s; log: {}",
                    c.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        c.addr = c
            .url
            .trim_start_matches("http://")
            .parse()
            .with_context(|| format!("control.addr holds {}", c.url))?;
        eprintln!("grantfs-control pid {} at {}", c.pid(), c.url);
        Ok(c)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> Result<Client> {
        Ok(Client::new(&self.url, Some(self.api_key.clone()))?)
    }

    /// The server's resident set, MiB.
    pub fn rss_mib(&self) -> Result<f64> {
        rss_mib(self.pid())
    }

    fn log_tail(&self) -> String {
        let s = std::fs::read(self.dir.path().join("control.log")).unwrap_or_default();
        let start = s.len().saturating_sub(2000);
        String::from_utf8_lossy(&s[start..]).into_owned()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child's pid, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number of threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

/// VmRSS of a process, MiB.
pub fn rss_mib(pid: u32) -> Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kib: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc status")?;
    Ok(kib / 1024.0)
}

/// Raises this process's open-file limit to at least `want` (to the hard limit, and past it when
/// privileged); children started afterwards inherit it. Returns the soft limit in force.
pub fn raise_nofile(want: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(NOFILE)");
    }
    if lim.rlim_max < want {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        // SAFETY: setrlimit reads the struct we own. Fails without CAP_SYS_RESOURCE; then the
        // hard limit stays and we use it.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(want);
        }
    }
    lim.rlim_cur = lim.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(NOFILE)");
    }
    Ok(lim.rlim_cur)
}
