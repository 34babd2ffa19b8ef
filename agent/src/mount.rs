//! Mounting: builds the fuser session over a backing directory and a gate, returns once the mount
//! is live, and hands back a handle to invalidate kernel caches and to unmount. When to do either
//! is the caller's decision (the listener, the CLI).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, INodeNo, MountOption, Notifier, Session, SessionACL};

use crate::fs::Fs;
use crate::fuse::{FuseConfig, GrantFs};
use crate::session_gate::SessionGate;

/// `statfs(2)` `f_type` of a FUSE mount.
pub const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

/// How long the kernel may answer from its attribute and entry caches. Revocation does not depend
/// on it: closing the gate drops every cached entry, attribute and page. What it bounds is coherence
/// with changes made to the backing directory *outside* this mount (another mount of the same
/// workspace on this host, an operator editing the data root): those show up within this time.
/// Changes through the mount are coherent at once. A workspace may be mounted by several runtimes
/// at once, so the default is short, as libfuse's passthrough uses.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);

/// The caches of an `--exclusive` mount (the only writer of its workspace on this host).
pub const EXCLUSIVE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct MountOptions {
    /// Mount with the kernel's `ro` flag (the gate refuses changes on its own as well).
    pub ro: bool,
    /// Let other users than the mounting one use the mount (`allow_other`).
    pub allow_other: bool,
    pub fsname: String,
    pub subtype: String,
    /// FUSE worker threads (each with its own cloned `/dev/fuse` fd).
    pub threads: usize,
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    /// How long `spawn_mount` waits for the mount to answer.
    pub mount_timeout: Duration,
    /// Send POSIX locks to the backing files (see `FuseConfig::backing_locks`).
    pub backing_locks: bool,
    /// Something besides this mount may write the backing directory (another mount of the same
    /// workspace on this host, a sync job): have the kernel drop cached pages when a file's mtime
    /// changes (`FUSE_AUTO_INVAL_DATA`). On by default; `--exclusive` mounts turn it off (and use
    /// [`EXCLUSIVE_TTL`]), keeping the page cache of files they write themselves.
    pub external_changes: bool,
    /// Run a watcher thread that calls `invalidate_all` whenever the gate goes from open to
    /// closed, whoever closed it (listener, expiry timer, offline watchdog).
    pub invalidate_on_close: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            ro: false,
            allow_other: false,
            fsname: "grantfs".to_owned(),
            subtype: "grantfs".to_owned(),
            threads: 4,
            attr_ttl: DEFAULT_TTL,
            entry_ttl: DEFAULT_TTL,
            mount_timeout: Duration::from_secs(5),
            backing_locks: false,
            external_changes: true,
            invalidate_on_close: true,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("backing directory {path}: {source}")]
    Backing {
        path: PathBuf,
        #[source]
        source: crate::fs::Error,
    },
    #[error("mountpoint {path}: {source}")]
    Mountpoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mounting at {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount at {path} did not become live within {timeout:?}")]
    NotLive { path: PathBuf, timeout: Duration },
    #[error("unmounting {path}: {source}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("FUSE session at {path} ended with an error: {source}")]
    Session {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What one `invalidate_all` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InvalidateReport {
    pub inodes: usize,
    pub entries: usize,
    pub errors: usize,
}

/// A live mount. Dropping it unmounts (like `unmount`, ignoring errors).
pub struct MountHandle {
    mountpoint: PathBuf,
    fs: Arc<Fs>,
    gate: Arc<SessionGate>,
    notifier: Notifier,
    session: Option<BackgroundSession>,
    watcher: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
    /// The fusectl connection id (minor of the mount's st_dev), for a last-resort abort.
    conn: Option<u32>,
}

impl std::fmt::Debug for MountHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MountHandle")
            .field("mountpoint", &self.mountpoint)
            .field("gate", &self.gate)
            .field("conn", &self.conn)
            .finish()
    }
}

/// Mounts `backing_dir` at `mountpoint` behind `gate`, and returns once the mount answers.
pub fn spawn_mount(
    backing_dir: &Path,
    mountpoint: &Path,
    gate: Arc<SessionGate>,
    opts: MountOptions,
) -> Result<MountHandle, MountError> {
    let fs = Arc::new(Fs::new(backing_dir).map_err(|source| MountError::Backing {
        path: backing_dir.to_owned(),
        source,
    })?);
    let mp = mountpoint
        .canonicalize()
        .map_err(|source| MountError::Mountpoint {
            path: mountpoint.to_owned(),
            source,
        })?;

    raise_nofile_limit();
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(opts.fsname.clone()),
        MountOption::Subtype(opts.subtype.clone()),
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::DefaultPermissions,
        if opts.ro {
            MountOption::RO
        } else {
            MountOption::RW
        },
    ];
    config.acl = if opts.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;

    let fuse_cfg = FuseConfig {
        attr_ttl: opts.attr_ttl,
        entry_ttl: opts.entry_ttl,
        backing_locks: opts.backing_locks,
        auto_inval_data: opts.external_changes,
        ..FuseConfig::default()
    };
    let filesystem = GrantFs::new(fs.clone(), gate.clone(), fuse_cfg);
    // Mounts (mount(2) as root, fusermount3 otherwise) and completes the INIT handshake.
    let session = Session::new(filesystem, &mp, &config).map_err(|source| MountError::Mount {
        path: mp.clone(),
        source,
    })?;
    let notifier = session.notifier();
    let bg = session.spawn().map_err(|source| MountError::Mount {
        path: mp.clone(),
        source,
    })?;

    let mut handle = MountHandle {
        mountpoint: mp.clone(),
        fs,
        gate,
        notifier,
        session: Some(bg),
        watcher: None,
        conn: None,
    };
    if let Err(e) = wait_live(&mp, opts.mount_timeout) {
        // Drop unmounts what we mounted.
        drop(handle);
        return Err(e);
    }
    handle.conn = fuse_conn_id(&mp);
    if opts.invalidate_on_close {
        handle.watcher = Some(
            spawn_watcher(
                handle.gate.clone(),
                handle.fs.clone(),
                handle.notifier.clone(),
            )
            .map_err(|source| MountError::Mount {
                path: mp.clone(),
                source,
            })?,
        );
    }
    tracing::info!(mountpoint = %mp.display(), backing = %backing_dir.display(), "mounted");
    Ok(handle)
}

impl MountHandle {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    pub fn fs(&self) -> &Arc<Fs> {
        &self.fs
    }

    pub fn gate(&self) -> &Arc<SessionGate> {
        &self.gate
    }

    /// Drops every kernel cache this mount may answer from: `inval_entry` for every known
    /// (parent, name), then `inval_inode(ino, 0, 0)` (attributes and all pages, mmaps included)
    /// for every known inode, so the next syscall reaches the daemon and meets the gate. Call it
    /// from any thread except a FUSE worker (from inside a request it could deadlock).
    pub fn invalidate_all(&self) -> InvalidateReport {
        invalidate(&self.notifier, &self.fs)
    }

    /// True once the FUSE session has ended (e.g. an external `fusermount3 -u`).
    pub fn is_finished(&self) -> bool {
        self.session.as_ref().is_none_or(|s| s.guard.is_finished())
    }

    /// Unmounts (lazily if busy, then aborting the connection if it lingers) and waits for the
    /// session threads to end.
    pub fn unmount(mut self) -> Result<(), MountError> {
        self.shutdown()
    }

    /// Blocks until the session ends (someone unmounted it), then cleans up.
    pub fn join(mut self) -> Result<(), MountError> {
        let Some(bg) = self.session.take() else {
            return Ok(());
        };
        let r = bg.join();
        self.stop_watcher();
        r.map_err(|source| MountError::Session {
            path: self.mountpoint.clone(),
            source,
        })
    }

    fn stop_watcher(&mut self) {
        if let Some((stop, t)) = self.watcher.take() {
            stop.store(true, Ordering::Release);
            let _ = t.join();
        }
    }

    fn shutdown(&mut self) -> Result<(), MountError> {
        self.stop_watcher();
        let Some(bg) = self.session.take() else {
            return Ok(());
        };
        let path = self.mountpoint.clone();
        if !bg.guard.is_finished() {
            umount(&path).map_err(|source| MountError::Unmount {
                path: path.clone(),
                source,
            })?;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        if !wait_until(deadline, || bg.guard.is_finished()) {
            // Lazily detached with files still open: end the connection for good.
            if let Some(conn) = self.conn
                && let Err(e) = abort_connection(conn)
            {
                tracing::warn!(error = %e, conn, "could not abort FUSE connection");
            }
            let deadline = Instant::now() + Duration::from_secs(2);
            if !wait_until(deadline, || bg.guard.is_finished()) {
                tracing::warn!(mountpoint = %path.display(), "FUSE session still running; detaching");
                return Err(MountError::Unmount {
                    path,
                    source: io::Error::new(io::ErrorKind::TimedOut, "session did not end"),
                });
            }
        }
        bg.join()
            .map_err(|source| MountError::Session { path, source })
    }
}

impl Drop for MountHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "unmount on drop failed");
        }
    }
}

fn invalidate(notifier: &Notifier, fs: &Fs) -> InvalidateReport {
    let known = fs.known_entries();
    let mut report = InvalidateReport::default();
    // Inodes first: attributes and pages (mmaps included) of every file go at once, so a
    // descriptor opened before the revocation cannot keep reading cached pages after a stat by
    // path has already met the closed gate. Then the names.
    for ino in &known.inodes {
        match notifier.inval_inode(INodeNo(*ino), 0, 0) {
            Ok(()) => report.inodes += 1,
            Err(e) => {
                report.errors += 1;
                tracing::debug!(error = %e, ino, "inval_inode failed");
            }
        }
    }
    for (parent, name) in &known.entries {
        match notifier.inval_entry(INodeNo(*parent), name) {
            Ok(()) => report.entries += 1,
            Err(e) => {
                report.errors += 1;
                tracing::debug!(error = %e, parent, ?name, "inval_entry failed");
            }
        }
    }
    tracing::info!(
        inodes = report.inodes,
        entries = report.entries,
        errors = report.errors,
        "kernel caches invalidated"
    );
    report
}

fn spawn_watcher(
    gate: Arc<SessionGate>,
    fs: Arc<Fs>,
    notifier: Notifier,
) -> io::Result<(Arc<AtomicBool>, JoinHandle<()>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let t = std::thread::Builder::new()
        .name("grantfs-inval".to_owned())
        .spawn(move || {
            let mut was_open = true;
            while !stop2.load(Ordering::Acquire) {
                let seen = gate.epoch();
                let open = gate.state().is_open();
                if was_open && !open {
                    invalidate(&notifier, &fs);
                }
                was_open = open;
                gate.wait_for_change(seen, Duration::from_millis(100));
            }
        })?;
    Ok((stop, t))
}

/// Each inode the kernel knows holds one `O_PATH` fd, so a tree walk needs many: lift the soft
/// `RLIMIT_NOFILE` to the hard limit (process-wide, as libfuse's passthrough_hp does).
fn raise_nofile_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 && lim.rlim_cur < lim.rlim_max
    {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: valid in-pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            tracing::warn!(error = %io::Error::last_os_error(), "could not raise RLIMIT_NOFILE");
        }
    }
}

fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

/// Live = `statfs` reports a FUSE file system, or our gate answers `EACCES` (closed but ours).
fn wait_live(mp: &Path, timeout: Duration) -> Result<(), MountError> {
    let c = cpath(mp).map_err(|source| MountError::Mountpoint {
        path: mp.to_owned(),
        source,
    })?;
    let deadline = Instant::now() + timeout;
    let live = wait_until(deadline, || {
        // SAFETY: zeroed statfs is a valid out-parameter; c is NUL-terminated.
        let mut s: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        let r = unsafe { libc::statfs(c.as_ptr(), &mut s) };
        if r == 0 {
            s.f_type == FUSE_SUPER_MAGIC
        } else {
            io::Error::last_os_error().raw_os_error() == Some(libc::EACCES)
        }
    });
    if live {
        Ok(())
    } else {
        Err(MountError::NotLive {
            path: mp.to_owned(),
            timeout,
        })
    }
}

/// The fusectl connection id of the mount at `mp`, from /proc/self/mountinfo.
fn fuse_conn_id(mp: &Path) -> Option<u32> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = mp.to_str()?;
    info.lines().rev().find_map(|line| {
        let mut f = line.split(' ');
        let _id = f.next()?;
        let _parent = f.next()?;
        let devno = f.next()?;
        let _root = f.next()?;
        let point = f.next()?;
        if unescape_mountinfo(point) != want {
            return None;
        }
        let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
        if !fstype.starts_with("fuse") {
            return None;
        }
        devno.split(':').nth(1)?.parse().ok()
    })
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Ends FUSE connection `conn` through fusectl's `abort` file. If fusectl is not mounted at
/// /sys/fs/fuse/connections, it is mounted briefly on a private directory (root only).
fn abort_connection(conn: u32) -> io::Result<()> {
    let sys = format!("/sys/fs/fuse/connections/{conn}/abort");
    match std::fs::write(&sys, b"1") {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("grantfs-fusectl-{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir)?;
    let c = cpath(&dir)?;
    // SAFETY: NUL-terminated strings; fusectl takes no data.
    let r = unsafe {
        libc::mount(
            c"fusectl".as_ptr(),
            c.as_ptr(),
            c"fusectl".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    let result = if r == 0 {
        let w = std::fs::write(dir.join(conn.to_string()).join("abort"), b"1");
        // SAFETY: NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        w
    } else {
        Err(io::Error::last_os_error())
    };
    let _ = std::fs::remove_dir(&dir);
    result
}

/// `umount2(mp, 0)`; if busy, a lazy detach; if not permitted, `fusermount3 -u -z`.
fn umount(mp: &Path) -> io::Result<()> {
    let c = cpath(mp)?;
    // SAFETY: c is NUL-terminated.
    if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // Not mounted any more (someone else unmounted it).
        Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
        Some(libc::EBUSY) => {
            // SAFETY: c is NUL-terminated.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        Some(libc::EPERM) => {
            let status = std::process::Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg("--")
                .arg(mp)
                .status()?;
            if status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!("fusermount3 -u failed: {status}")))
            }
        }
        _ => Err(e),
    }
}
