//! Real FUSE mounts for the benchmarks: `grantfs-agent mount` of an issued ticket, a guard that
//! unmounts whatever is left (also on an error mid-run), and the three revoke calls; the probing
//! and the measuring stay with the benchmarks.

use std::ffi::CString;
use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use grantfs::api::RevokeGrants;
use serde_json::Value;

use crate::http::request;

/// The three revoke paths, used in turn.
pub const REVOKE_PATHS: [&str; 3] = ["session", "grant", "runtime"];

/// One live mount of a run.
pub struct Mounted {
    pub mnt: PathBuf,
    pub file: PathBuf,
    pub session_id: String,
    pub grant_id: String,
    pub tenant: String,
    pub runtime: String,
}

/// Unmounts whatever is still mounted when dropped (also on an error mid-run). Shared by the
/// threads of a run, so the list sits behind a lock.
pub struct MountGuard {
    agent: PathBuf,
    runtime_dir: PathBuf,
    live: Mutex<Vec<PathBuf>>,
}

impl MountGuard {
    pub fn new(agent: &Path, runtime_dir: &Path) -> Self {
        Self {
            agent: agent.to_owned(),
            runtime_dir: runtime_dir.to_owned(),
            live: Mutex::new(Vec::new()),
        }
    }

    fn live(&self) -> std::sync::MutexGuard<'_, Vec<PathBuf>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn add(&self, mnt: PathBuf) {
        self.live().push(mnt);
    }

    /// Unmounts one mountpoint; the error message when it failed.
    pub fn unmount(&self, mnt: &Path) -> Option<String> {
        self.live().retain(|m| m != mnt);
        let child = self.unmount_command(mnt);
        finish_unmount(mnt, child)
    }

    /// Unmounts everything still listed, all at once; the error messages of those that failed.
    pub fn unmount_all(&self) -> Vec<String> {
        let live: Vec<PathBuf> = self.live().drain(..).collect();
        let children: Vec<_> = live
            .into_iter()
            .map(|mnt| {
                let child = self.unmount_command(&mnt);
                (mnt, child)
            })
            .collect();
        children
            .into_iter()
            .filter_map(|(mnt, child)| finish_unmount(&mnt, child))
            .collect()
    }

    fn unmount_command(&self, mnt: &Path) -> std::io::Result<std::process::Child> {
        Command::new(&self.agent)
            .arg("unmount")
            .arg(mnt)
            .env("GRANTFS_RUNTIME_DIR", &self.runtime_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    }
}

/// Waits for an unmount command; on failure detaches the mount lazily as the last resort.
fn finish_unmount(mnt: &Path, child: std::io::Result<std::process::Child>) -> Option<String> {
    let err = match child.and_then(|c| c.wait_with_output()) {
        Ok(o) if o.status.success() => return None,
        Ok(o) => format!(
            "unmount {}: {}",
            mnt.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("unmount {}: {e}", mnt.display()),
    };
    if let Ok(c) = CString::new(mnt.as_os_str().as_bytes()) {
        // SAFETY: umount2 with a valid C string; a lazy detach as the last resort.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
    Some(err)
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        self.unmount_all();
    }
}

/// Where and how `grantfs-agent mount` runs.
pub struct Agent<'a> {
    pub bin: &'a Path,
    pub data_root: &'a Path,
    pub runtime_dir: &'a Path,
}

impl Agent<'_> {
    /// Mounts workspace `ws` at `mnt` with `ticket` (given on stdin); returns once the agent
    /// reported the mount live, with the command's wall time in ms.
    pub fn mount(&self, ws: &str, mnt: &Path, ticket: &str) -> Result<f64> {
        std::fs::create_dir_all(mnt).with_context(|| format!("creating {}", mnt.display()))?;
        let t = Instant::now();
        let mut child = Command::new(self.bin)
            .arg("mount")
            .arg(ws)
            .arg(mnt)
            .args(["--ticket-stdin", "--json", "--data-root"])
            .arg(self.data_root)
            .env("GRANTFS_RUNTIME_DIR", self.runtime_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(ticket.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if !out.status.success() {
            bail!(
                "grantfs-agent mount {} failed ({}): {}",
                mnt.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let ev: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if ev["event"] != "mounted" {
            bail!(
                "grantfs-agent mount printed {:?}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(ms)
    }
}

/// The request bytes of revoke path `which` (one of `REVOKE_PATHS`) for mount `m`.
pub fn revoke_request(addr: SocketAddr, key: &str, which: &str, m: &Mounted) -> Result<Vec<u8>> {
    Ok(match which {
        "session" => request(
            addr,
            "DELETE",
            &format!("/v1/sessions/{}", m.session_id),
            Some(key),
            None,
        ),
        "grant" => request(
            addr,
            "DELETE",
            &format!("/v1/grants/{}", m.grant_id),
            Some(key),
            None,
        ),
        _ => {
            let body = serde_json::to_vec(&RevokeGrants {
                tenant_slug: m.tenant.clone(),
                runtime_id: Some(m.runtime.clone()),
                workspace: None,
            })?;
            request(addr, "POST", "/v1/grants/revoke", Some(key), Some(&body))
        }
    })
}

/// The calling thread's last errno.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}
