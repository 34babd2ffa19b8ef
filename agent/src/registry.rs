//! This host's mounts: one JSON record per live mount in the runtime dir (written by the agent
//! that holds the mount), the kernel's mount table, and how to tell a live mount from one left
//! behind by a killed agent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The source (fsname) a grantfs mount shows in /proc/self/mountinfo; the fstype is `fuse` when
/// root mounts directly and `fuse.grantfs` through fusermount3.
pub const FSNAME: &str = "grantfs";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub mountpoint: String,
    pub workspace: String,
    pub mode: String,
    pub session_id: String,
    pub pid: u32,
    pub control: String,
    pub expires_at: String,
    pub gate: String,
    pub mounted_at: String,
}

/// A record with what this host says about it now.
#[derive(Debug, Clone, Serialize)]
pub struct MountStatus {
    #[serde(flatten)]
    pub record: MountRecord,
    /// `live` (agent running, mounted), `stale` (mounted, agent gone), `gone` (neither).
    pub health: &'static str,
}

pub struct Registry {
    dir: PathBuf,
}

fn record_name(mountpoint: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in mountpoint.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}.json")
}

impl Registry {
    pub fn new(runtime_dir: &Path) -> Self {
        Self {
            dir: runtime_dir.join("mounts"),
        }
    }

    pub fn write(&self, r: &MountRecord) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(record_name(&r.mountpoint));
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(r)?)?;
        fs::rename(tmp, path)
    }

    pub fn remove(&self, mountpoint: &str) {
        let _ = fs::remove_file(self.dir.join(record_name(mountpoint)));
    }

    pub fn get(&self, mountpoint: &str) -> Option<MountRecord> {
        let bytes = fs::read(self.dir.join(record_name(mountpoint))).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn all(&self) -> Vec<MountRecord> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut out: Vec<MountRecord> = rd
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
            .collect();
        out.sort_by(|a, b| a.mountpoint.cmp(&b.mountpoint));
        out
    }

    pub fn status(&self, r: MountRecord) -> MountStatus {
        let mounted = mount_at(Path::new(&r.mountpoint)).is_some_and(|m| m.is_grantfs());
        let alive = pid_alive(r.pid);
        let health = match (alive, mounted) {
            (true, true) => "live",
            (false, true) => "stale",
            _ => "gone",
        };
        MountStatus { record: r, health }
    }
}

/// Whether the process runs. A zombie (exited, not yet reaped by its parent, which for a detached
/// agent is an init that may reap late or never) does not: kill(0) alone would say it does.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        // kill(0) and kill(-1) address process groups, not a recorded agent.
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid, 0) };
    let exists = r == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

/// Reads the state letter of /proc/<pid>/stat (after the last `)`, as the name may hold any byte).
fn is_zombie(pid: i32) -> bool {
    fs::read(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.iter()
            .rposition(|&b| b == b')')
            .and_then(|i| stat.get(i + 2))
            .is_some_and(|&state| state == b'Z' || state == b'X')
    })
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    pub fn is_grantfs(&self) -> bool {
        self.source == FSNAME && (self.fstype == "fuse" || self.fstype == "fuse.grantfs")
    }
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mountpoint = pre.split(' ').nth(4)?;
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let source = post.next().unwrap_or("");
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fstype: fstype.to_owned(),
                source: unescape(source),
            })
        })
        .collect()
}

/// The topmost mount at exactly `path`, if any.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.mountpoint == path)
}

/// An absolute form of `path` that works even when the path is a dead FUSE mount (where
/// canonicalize fails with ENOTCONN).
pub fn absolute(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    match (
        abs.parent().and_then(|p| p.canonicalize().ok()),
        abs.file_name(),
    ) {
        (Some(parent), Some(name)) => parent.join(name),
        _ => abs,
    }
}

/// Detaches whatever is mounted at `path` (lazy unmount), as a last resort for stale mounts.
pub fn detach(path: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path has a NUL byte"))?;
    // SAFETY: c is a valid NUL-terminated path.
    let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // Not root: ask fusermount3.
    let st = std::process::Command::new("fusermount3")
        .arg("-u")
        .arg("-z")
        .arg(path)
        .status();
    match st {
        Ok(s) if s.success() => Ok(()),
        _ => Err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_parsed_with_escapes() {
        let t = "36 35 98:0 / /mnt/my\\040dir rw,noatime master:1 - fuse.grantfs grantfs rw,user_id=0\n\
                 37 35 98:1 / /proc rw - proc proc rw\n";
        let m = parse_mountinfo(t);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/my dir"));
        assert!(m[0].is_grantfs());
        assert!(!m[1].is_grantfs());
        assert_eq!(m[1].fstype, "proc");
    }

    #[test]
    fn records_round_trip_and_are_keyed_by_mountpoint() {
        let d = tempfile::tempdir().unwrap();
        let reg = Registry::new(d.path());
        let r = MountRecord {
            mountpoint: "/mnt/a".into(),
            workspace: "admin/ws".into(),
            mode: "rw".into(),
            session_id: "ses_1".into(),
            pid: std::process::id(),
            control: "http://127.0.0.1:1".into(),
            expires_at: "2030-01-01T00:00:00Z".into(),
            gate: "active".into(),
            mounted_at: "2026-01-01T00:00:00Z".into(),
        };
        reg.write(&r).unwrap();
        assert_eq!(reg.get("/mnt/a"), Some(r.clone()));
        assert_eq!(reg.all(), vec![r.clone()]);
        assert_eq!(reg.status(r).health, "gone");
        reg.remove("/mnt/a");
        assert!(reg.all().is_empty());
    }

    #[test]
    fn this_process_is_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(u32::MAX));
        assert!(!pid_alive(0));
    }

    #[test]
    fn an_exited_unreaped_process_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Not reaped yet: a zombie until wait().
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !is_zombie(pid as i32) {
            assert!(std::time::Instant::now() < deadline, "child never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!pid_alive(pid));
        child.wait().unwrap();
        assert!(!pid_alive(pid));
    }
}
