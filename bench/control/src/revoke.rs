//! `revoke-latency`: real FUSE mounts made with `grantfs-agent mount`; for each, a warmed probe
//! (stat of a file, read on an fd opened before, readdir of the root), then a revoke call (by
//! session, by grant, by runtime, in turn) and the probe spun without sleeping until `EACCES`.
//! Measures revoke-call-returned → first `EACCES`, and the mount command's wall time.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grantfs::api::CreateTicket;
use grantfs::client::Client;
use serde_json::{Value, json};
use tokio::runtime::Runtime;

use crate::control::{Control, TempDir};
use crate::http::Conn;
use crate::mounts::{Agent, MountGuard, Mounted, REVOKE_PATHS, errno, revoke_request};
use crate::stats::{round3, summary};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeArg {
    Stat,
    Read,
    Readdir,
    All,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Probe {
    Stat,
    Read,
    Readdir,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Stat => "stat",
            Probe::Read => "read",
            Probe::Readdir => "readdir",
        }
    }
}

/// The probe's state between warming and spinning.
pub(crate) enum Armed {
    Stat(CString),
    Read(std::fs::File),
    Readdir(PathBuf),
}

impl Armed {
    /// Warms the kernel caches the probe would be answered from; errors if the mount refuses.
    pub(crate) fn warm(probe: Probe, m: &Mounted) -> Result<Armed> {
        let armed = match probe {
            Probe::Stat => Armed::Stat(CString::new(m.file.as_os_str().as_bytes())?),
            Probe::Read => Armed::Read(std::fs::File::open(&m.file)?),
            Probe::Readdir => Armed::Readdir(m.mnt.clone()),
        };
        for _ in 0..2 {
            if let Err(e) = armed.once() {
                bail!("warming {} on {}: errno {e}", probe.name(), m.mnt.display());
            }
        }
        Ok(armed)
    }

    /// One probe: `Err(errno)` once the mount refuses.
    pub(crate) fn once(&self) -> Result<(), i32> {
        match self {
            Armed::Stat(p) => {
                // SAFETY: a valid C string and a zeroed stat buffer we own.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::stat(p.as_ptr(), &mut st) } != 0 {
                    return Err(errno());
                }
            }
            Armed::Read(f) => {
                let mut b = [0u8; 64];
                // SAFETY: reads into a buffer we own from a descriptor we hold.
                let n = unsafe { libc::pread(f.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
                if n < 0 {
                    return Err(errno());
                }
            }
            Armed::Readdir(d) => {
                let rd = std::fs::read_dir(d).map_err(|e| e.raw_os_error().unwrap_or(0))?;
                for e in rd {
                    e.map_err(|e| e.raw_os_error().unwrap_or(0))?;
                }
            }
        }
        Ok(())
    }
}

struct Run<'a> {
    rt: &'a Runtime,
    agent: &'a Path,
    client: Client,
    admin: Conn,
    ctl: &'a Control,
    ws: String,
    data: PathBuf,
    runtime_dir: PathBuf,
    mnt_root: PathBuf,
    seq: usize,
}

impl Run<'_> {
    /// Issues a ticket and mounts it; returns the mount and the mount command's wall time (ms).
    fn mount(&mut self, slot: usize) -> Result<(Mounted, f64)> {
        self.seq += 1;
        let tenant = format!("rl-t{}", self.seq % 4);
        let runtime = format!("rl-{}", self.seq);
        let issued = self.rt.block_on(self.client.create_ticket(&CreateTicket {
            tenant_slug: tenant.clone(),
            runtime_id: runtime.clone(),
            workspace: self.ws.clone(),
            mode: "rw".into(),
            ttl_seconds: 600,
        }))?;
        let mnt = self.mnt_root.join(format!("m{slot}"));
        let agent = Agent {
            bin: self.agent,
            data_root: &self.data,
            runtime_dir: &self.runtime_dir,
        };
        let mount_ms = agent.mount(&self.ws, &mnt, &issued.mount_ticket)?;
        let file = mnt.join(format!("f-{}.txt", self.seq));
        std::fs::write(&file, b"grantfs revoke-latency probe\n")
            .with_context(|| format!("writing {}", file.display()))?;
        Ok((
            Mounted {
                mnt,
                file,
                session_id: issued.session_id.to_string(),
                grant_id: issued.grant_id.to_string(),
                tenant,
                runtime,
            },
            mount_ms,
        ))
    }

    /// The revoke call of path `which`, sent on a keep-alive connection; returns when answered.
    fn revoke(&mut self, which: &str, m: &Mounted) -> Result<()> {
        let addr = self.ctl.addr;
        let key = self.ctl.api_key.as_str();
        let req = revoke_request(addr, key, which, m)?;
        let r = self.rt.block_on(self.admin.call(&req))?;
        if r.status != 200 {
            bail!(
                "revoke by {which} answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            );
        }
        Ok(())
    }
}

#[derive(Default)]
struct ProbeResult {
    after_return_ms: Vec<f64>,
    after_start_ms: Vec<f64>,
    call_ms: Vec<f64>,
    timeouts: usize,
    wrong_errno: BTreeMap<i32, usize>,
}

pub fn run(
    rt: &Runtime,
    control_bin: &Path,
    agent: &Path,
    n: usize,
    probe: ProbeArg,
    batch: usize,
) -> Result<Value> {
    if !agent.is_file() {
        bail!(
            "grantfs-agent not found at {} (build it, or pass --agent-bin)",
            agent.display()
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: revoke-latency needs real FUSE mounts");
    }
    let probes = match probe {
        ProbeArg::Stat => vec![Probe::Stat],
        ProbeArg::Read => vec![Probe::Read],
        ProbeArg::Readdir => vec![Probe::Readdir],
        ProbeArg::All => vec![Probe::Stat, Probe::Read, Probe::Readdir],
    };
    let ctl = Control::start(control_bin)?;
    let client = ctl.client()?;
    let ws = rt
        .block_on(client.create_workspace("revoke-bench"))?
        .reference;
    let tmp = TempDir::new("revoke")?;
    let admin = rt.block_on(Conn::connect(ctl.addr))?;
    let mut r = Run {
        rt,
        agent,
        client,
        admin,
        ctl: &ctl,
        ws,
        data: tmp.path().join("data"),
        runtime_dir: tmp.path().join("run"),
        mnt_root: tmp.path().join("mnt"),
        seq: 0,
    };
    let guard = MountGuard::new(agent, &r.runtime_dir);
    let mut mount_ms = Vec::new();
    let mut unmount_errors = Vec::new();
    let mut results: Vec<(Probe, ProbeResult)> = Vec::new();
    let mut k = 0usize;
    for &p in &probes {
        let mut res = ProbeResult::default();
        let mut done = 0;
        while done < n {
            let this = batch.min(n - done);
            let mut mounts = Vec::with_capacity(this);
            for slot in 0..this {
                let (m, ms) = r.mount(slot)?;
                guard.add(m.mnt.clone());
                mount_ms.push(ms);
                mounts.push(m);
            }
            for m in &mounts {
                let which = REVOKE_PATHS[k % REVOKE_PATHS.len()];
                k += 1;
                let armed = Armed::warm(p, m)?;
                let t0 = Instant::now();
                r.revoke(which, m)?;
                let t1 = Instant::now();
                let deadline = t1 + Duration::from_secs(5);
                let outcome = loop {
                    if let Err(e) = armed.once() {
                        break Some((Instant::now(), e));
                    }
                    if Instant::now() > deadline {
                        break None;
                    }
                };
                res.call_ms.push((t1 - t0).as_secs_f64() * 1000.0);
                match outcome {
                    Some((t2, libc::EACCES)) => {
                        res.after_return_ms.push((t2 - t1).as_secs_f64() * 1000.0);
                        res.after_start_ms.push((t2 - t0).as_secs_f64() * 1000.0);
                    }
                    Some((_, e)) => *res.wrong_errno.entry(e).or_default() += 1,
                    None => res.timeouts += 1,
                }
                drop(armed);
            }
            unmount_errors.extend(guard.unmount_all());
            for m in &mounts {
                if let Some(name) = m.file.file_name() {
                    // The workspace's directory under the data root is `handle/name`.
                    let _ = std::fs::remove_file(r.data.join(&r.ws).join(name));
                }
            }
            done += this;
            eprintln!(
                "{}: {done}/{n} (last p50 so far {:.2} ms after the call returned)",
                p.name(),
                summary(&res.after_return_ms)["p50_ms"]
                    .as_f64()
                    .unwrap_or(0.0)
            );
        }
        results.push((p, res));
    }

    let mut per_probe = serde_json::Map::new();
    let mut worst_p99: f64 = 0.0;
    let mut worst_max: f64 = 0.0;
    let mut all_ok = true;
    for (p, res) in &results {
        let ret = summary(&res.after_return_ms);
        worst_p99 = worst_p99.max(ret["p99_ms"].as_f64().unwrap_or(0.0));
        worst_max = worst_max.max(ret["max_ms"].as_f64().unwrap_or(0.0));
        all_ok &= res.timeouts == 0 && res.wrong_errno.is_empty();
        per_probe.insert(
            p.name().to_owned(),
            json!({
                "n": res.after_return_ms.len(),
                "p50_ms": ret["p50_ms"],
                "p99_ms": ret["p99_ms"],
                "max_ms": ret["max_ms"],
                "after_call_return": ret,
                "after_call_start": summary(&res.after_start_ms),
                "revoke_call": summary(&res.call_ms),
                "timeouts": res.timeouts,
                "wrong_errno": res.wrong_errno.iter().map(|(e, c)| (e.to_string(), json!(c))).collect::<serde_json::Map<_, _>>(),
                "samples_ms": res.after_return_ms.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
            }),
        );
    }
    let mounts = summary(&mount_ms);
    Ok(json!({
        "bench": "revoke-latency",
        "n_per_probe": n,
        "batch": batch,
        "revoke_paths": REVOKE_PATHS,
        "probes": per_probe,
        "mount": {
            "n": mount_ms.len(),
            "p50_ms": mounts["p50_ms"],
            "p99_ms": mounts["p99_ms"],
            "max_ms": mounts["max_ms"],
            "samples_ms": mount_ms.iter().map(|v| round3(*v)).collect::<Vec<_>>(),
        },
        "unmount_errors": unmount_errors,
        "target_revoke_p99_ms": 100,
        "target_revoke_max_ms": 1000,
        "target_mount_ms": 300,
        "target_met": all_ok && worst_p99 <= 100.0 && worst_max <= 1000.0
            && mounts["p99_ms"].as_f64().unwrap_or(f64::MAX) <= 300.0,
    }))
}
