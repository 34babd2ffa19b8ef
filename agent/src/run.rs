//! What the commands do: `mount` (refuse early, verify, exchange, mount, detach once live, then
//! hold the mount and feed the gate until unmounted), `unmount` and `status`.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use grantfs::api::Exchange;
use grantfs::client::{Client, ClientError};
use grantfs::ticket::{self, TicketClaims};
use grantfs::{ErrorCode, Mode, Timestamp, WorkspaceRef};
use serde_json::json;

use crate::cli::MountArgs;
use crate::listener::{self, ListenerConfig};
use crate::mount::{MountOptions, spawn_mount};
use crate::registry::{self, MountRecord, Registry};
use crate::session_gate::{GateState, SessionGate};

/// A refusal or failure, said in one line; exit code 1.
#[derive(Debug)]
pub struct Refusal(pub String);

impl<T: std::fmt::Display> From<T> for Refusal {
    fn from(e: T) -> Self {
        Refusal(e.to_string())
    }
}

type Result<T> = std::result::Result<T, Refusal>;

fn refuse<T>(msg: impl Into<String>) -> Result<T> {
    Err(Refusal(msg.into()))
}

const MAX_TICKET_INPUT: u64 = 64 * 1024;

/// Reads the ticket from stdin, a file, or GRANTFS_TICKET (passed in by main), never argv.
pub fn read_ticket(args: &MountArgs, env_ticket: Option<String>) -> Result<String> {
    let raw = if args.ticket_stdin {
        let mut s = String::new();
        std::io::stdin()
            .take(MAX_TICKET_INPUT)
            .read_to_string(&mut s)
            .map_err(|e| Refusal(format!("reading the ticket from stdin: {e}")))?;
        s
    } else if let Some(f) = &args.ticket_file {
        let mut s = String::new();
        std::fs::File::open(f)
            .and_then(|file| file.take(MAX_TICKET_INPUT).read_to_string(&mut s))
            .map_err(|e| Refusal(format!("reading the ticket file {}: {e}", f.display())))?;
        s
    } else if let Some(t) = env_ticket {
        t
    } else {
        return refuse("no ticket: pass --ticket-stdin, --ticket-file FILE or set GRANTFS_TICKET");
    };
    let t = raw.trim().to_owned();
    if t.is_empty() {
        return refuse("the ticket is empty");
    }
    Ok(t)
}

/// Checks that can refuse before any network call: the ticket's shape and time, and that it names
/// the workspace asked for.
pub fn precheck(ticket: &str, workspace_arg: &str) -> Result<(TicketClaims, WorkspaceRef)> {
    let claims = ticket::peek(ticket).map_err(|e| Refusal(format!("ticket refused: {e}")))?;
    let ws = WorkspaceRef::parse(&claims.ws)
        .map_err(|e| Refusal(format!("ticket refused: workspace claim: {e}")))?;
    let wanted = WorkspaceRef::parse_with_default(workspace_arg, Some(&ws.handle))
        .map_err(|e| Refusal(format!("workspace argument: {e}")))?;
    if wanted != ws {
        return refuse(format!("the ticket is for workspace {ws}, not {wanted}"));
    }
    Ok((claims, ws))
}

fn preflight(mountpoint: &Path) -> Result<PathBuf> {
    if !Path::new("/dev/fuse").exists() {
        return refuse(
            "/dev/fuse is missing: load the fuse module (modprobe fuse) or give the container the device",
        );
    }
    if !nix_is_root() && which("fusermount3").is_none() {
        return refuse("fusermount3 is missing: install fuse3 (apt-get install -y fuse3)");
    }
    let abs = registry::absolute(mountpoint);
    if let Some(m) = registry::mount_at(&abs) {
        if m.is_grantfs() {
            return refuse(format!(
                "mountpoint {} is busy: a grantfs mount is already there (grantfs-agent status; grantfs-agent unmount {} clears it)",
                abs.display(),
                abs.display()
            ));
        }
        return refuse(format!(
            "mountpoint {} is busy: {} is mounted there",
            abs.display(),
            m.fstype
        ));
    }
    match std::fs::metadata(&abs) {
        Ok(md) if md.is_dir() => Ok(abs),
        Ok(_) => refuse(format!("mountpoint {} is not a directory", abs.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse(format!("mountpoint {} does not exist", abs.display()))
        }
        Err(e) => refuse(format!("mountpoint {}: {e}", abs.display())),
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
}

fn client_error(what: &str, e: ClientError) -> Refusal {
    match &e {
        ClientError::Transport { url, .. } => {
            Refusal(format!("control plane unreachable at {url}: {what} failed"))
        }
        ClientError::Api { body, .. } => Refusal(match body.code {
            ErrorCode::TicketAlreadyUsed => format!("ticket already used: {}", body.message),
            ErrorCode::TicketExpired => format!("ticket expired: {}", body.message),
            ErrorCode::SessionRevoked => format!("session revoked: {}", body.message),
            ErrorCode::SessionExpired => format!("session expired: {}", body.message),
            code => format!("{what} refused ({code}): {}", body.message),
        }),
        ClientError::Protocol { .. } => Refusal(format!("{what}: {e}")),
    }
}

/// Verifies the ticket against the control plane's JWKS and exchanges it.
async fn verify_and_exchange(client: &Client, ticket: &str, issuer: &str) -> Result<Exchange> {
    let jwks = client
        .jwks()
        .await
        .map_err(|e| client_error("fetching the signing keys", e))?;
    let verifier = grantfs::ticket::TicketVerifier::from_jwks(&jwks, Some(issuer.to_owned()))?;
    verifier
        .verify(ticket)
        .map_err(|e| Refusal(format!("ticket refused: {e}")))?;
    client
        .exchange(ticket)
        .await
        .map_err(|e| client_error("ticket exchange", e))
}

/// The JSON event printed for `--json`.
fn mounted_event(ex: &Exchange, mountpoint: &Path, elapsed: Duration) -> serde_json::Value {
    json!({
        "event": "mounted",
        "workspace": ex.workspace,
        "mountpoint": mountpoint,
        "mode": ex.mode,
        "session_id": ex.session_id,
        "expires_at": ex.expires_at,
        "pid": std::process::id(),
        "mount_ms": elapsed.as_millis() as u64,
    })
}

fn emit(json_mode: bool, ev: &serde_json::Value, human: &str) {
    let mut out = std::io::stdout().lock();
    let _ = if json_mode {
        writeln!(out, "{ev}")
    } else {
        writeln!(out, "{human}")
    };
    let _ = out.flush();
}

/// `mount`: in the foreground, or detached through a child that reports readiness.
pub fn mount(args: MountArgs, ticket: String) -> Result<()> {
    if cfg!(feature = "bench-no-gate") {
        eprintln!(
            "grantfs-agent: WARNING: this is a benchmark build (bench-no-gate): it does NOT enforce \
             revocation or expiry; never use it for real workspaces"
        );
    }
    let started = Instant::now();
    let (claims, ws) = precheck(&ticket, &args.workspace)?;
    let mountpoint = preflight(&args.mountpoint)?;
    if !args.foreground {
        return detach(&args, &ticket, &mountpoint);
    }
    let control = args.control.clone().unwrap_or_else(|| claims.iss.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = Client::new(&control, None)?;
    let ready = args.ready_fd.map(|fd| {
        // SAFETY: the parent passed us this descriptor for our exclusive use.
        std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) })
    });
    let result = rt.block_on(verify_and_exchange(&client, &ticket, &claims.iss));
    let ex = match result {
        Ok(ex) => ex,
        Err(e) => {
            report_ready(ready, &json!({"event": "error", "message": e.0}));
            return Err(e);
        }
    };
    match hold(&args, &rt, client, ex, ws, &mountpoint, started, ready) {
        Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

fn report_ready(ready: Option<std::fs::File>, ev: &serde_json::Value) {
    if let Some(mut f) = ready {
        let _ = writeln!(f, "{ev}");
    }
}

#[allow(clippy::too_many_arguments)]
fn hold(
    args: &MountArgs,
    rt: &tokio::runtime::Runtime,
    client: Client,
    ex: Exchange,
    ws: WorkspaceRef,
    mountpoint: &Path,
    started: Instant,
    ready: Option<std::fs::File>,
) -> Result<()> {
    let fail = |ready: Option<std::fs::File>, msg: String| -> Result<()> {
        report_ready(ready, &json!({"event": "error", "message": msg}));
        Err(Refusal(msg))
    };
    if ex.storage.kind != "local" || ex.storage.path != ws.storage_path() {
        return fail(
            ready,
            format!(
                "control plane answered storage {}:{} for {ws}; refusing",
                ex.storage.kind, ex.storage.path
            ),
        );
    }
    let backing = args.data_root.join(&ex.storage.path);
    if let Err(e) = std::fs::create_dir_all(&backing) {
        return fail(
            ready,
            format!("creating workspace directory {}: {e}", backing.display()),
        );
    }
    let gate = SessionGate::new(ex.mode, ex.expires_at.millis());
    let mut opts = MountOptions {
        ro: ex.mode == Mode::Ro,
        allow_other: args.allow_other,
        threads: args.threads as usize,
        ..MountOptions::default()
    };
    if args.exclusive {
        opts.attr_ttl = crate::mount::EXCLUSIVE_TTL;
        opts.entry_ttl = crate::mount::EXCLUSIVE_TTL;
        opts.external_changes = false;
    }
    let handle = match spawn_mount(&backing, mountpoint, gate.clone(), opts) {
        Ok(h) => h,
        Err(e) => return fail(ready, format!("mount failed: {e}")),
    };
    let elapsed = started.elapsed();
    let registry = Registry::new(&args.runtime_dir);
    let mp = mountpoint.to_string_lossy().into_owned();
    let mut record = MountRecord {
        mountpoint: mp.clone(),
        workspace: ex.workspace.clone(),
        mode: ex.mode.as_str().to_owned(),
        session_id: ex.session_id.to_string(),
        pid: std::process::id(),
        control: client.base_url().to_owned(),
        expires_at: ex.expires_at.to_rfc3339(),
        gate: "active".into(),
        mounted_at: Timestamp::now().to_rfc3339(),
    };
    if let Err(e) = registry.write(&record) {
        tracing::warn!(error = %e, "could not write the mount record; status will not list this mount");
    }
    tracing::info!(session = %ex.session_id, workspace = ex.workspace, mountpoint = %mountpoint.display(), mount_ms = elapsed.as_millis() as u64, "mount live");
    let ev = mounted_event(&ex, mountpoint, elapsed);
    let human = format!(
        "mounted {} at {} ({}, session {}, expires {})",
        ex.workspace,
        mountpoint.display(),
        ex.mode,
        ex.session_id,
        ex.expires_at
    );
    if ready.is_some() {
        report_ready(ready, &ev);
    } else {
        emit(args.json, &ev, &human);
    }

    let cfg = ListenerConfig {
        client: client.clone(),
        session_id: ex.session_id.clone(),
        token: ex.session_token.clone(),
        offline_grace: Duration::from_secs(args.offline_grace),
        keepalive: Duration::from_secs(ex.keepalive_seconds.max(1)),
    };
    let json_mode = args.json;
    let session_id = ex.session_id.clone();
    let token = ex.session_token.clone();
    rt.block_on(async {
        // Subscribe before the listener can flip the gate, so no change goes unreported.
        let mut states = gate.subscribe();
        let listener = tokio::spawn(listener::run(cfg, gate.clone()));
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut reported = GateState::Active;
        let external = loop {
            tokio::select! {
                _ = term.recv() => break false,
                _ = tokio::signal::ctrl_c() => break false,
                r = states.changed() => {
                    if r.is_err() { continue; }
                    let st = *states.borrow_and_update();
                    if st != reported {
                        reported = st;
                        record.gate = st.as_string();
                        let _ = registry.write(&record);
                        if st.is_terminal() {
                            let (event, reason) = match st {
                                GateState::Revoked(r) => ("revoked", r.as_str()),
                                _ => ("revoked", "expired"),
                            };
                            emit(json_mode, &json!({"event": event, "reason": reason, "session_id": session_id, "at": Timestamp::now()}),
                                 &format!("session {session_id} {reason}: every operation on {} now fails with EACCES", record.mountpoint));
                        } else {
                            tracing::info!(gate = st.as_string(), "gate state changed");
                        }
                    }
                }
                _ = tick.tick() => {
                    if handle.is_finished() { break true; }
                }
            }
        };
        listener.abort();
        Ok::<bool, std::io::Error>(external)
    })
    .map_err(|e| Refusal(format!("waiting for signals: {e}")))
    .and_then(|external| {
        let unmounted = if external { handle.join() } else { handle.unmount() };
        registry.remove(&mp);
        if let Err(e) = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), client.end_session(&session_id, &token)).await
        }) {
            tracing::warn!(error = %e, "ending the session timed out");
        }
        emit(json_mode, &json!({"event": "unmounted", "session_id": session_id, "mountpoint": mp}), &format!("unmounted {mp}"));
        unmounted.map_err(|e| Refusal(format!("unmount: {e}")))
    })
}

/// Starts the agent again in the foreground as a detached child, hands it the ticket on stdin,
/// and returns once the child says the mount is live (or why it is not).
fn detach(args: &MountArgs, ticket: &str, mountpoint: &Path) -> Result<()> {
    let mut fds = [0i32; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return refuse(format!(
            "creating a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: pipe2 just returned these two descriptors to us.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let child_fd = fds[1];
    std::fs::create_dir_all(args.runtime_dir.join("logs"))?;
    let log_path = args.runtime_dir.join("logs").join(format!(
        "{}.log",
        mountpoint
            .to_string_lossy()
            .trim_start_matches('/')
            .replace('/', "_")
    ));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg(&args.workspace)
        .arg(mountpoint)
        .arg("--ticket-stdin")
        .arg("--foreground")
        .arg("--data-root")
        .arg(&args.data_root)
        .arg("--offline-grace")
        .arg(args.offline_grace.to_string())
        .arg("--threads")
        .arg(args.threads.to_string())
        .arg("--runtime-dir")
        .arg(&args.runtime_dir)
        .arg("--ready-fd")
        .arg(child_fd.to_string());
    if let Some(c) = &args.control {
        cmd.arg("--control").arg(c);
    }
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    if args.exclusive {
        cmd.arg("--exclusive");
    }
    cmd.env_remove("GRANTFS_TICKET")
        .env_remove("GRANTFS_TICKET_FILE")
        .env_remove("GRANTFS_JSON")
        .env_remove("GRANTFS_FOREGROUND")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log.try_clone()?)
        .process_group(0);
    // SAFETY: only async-signal-safe calls between fork and exec: clear FD_CLOEXEC on our end.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(child_fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Refusal(format!("starting the agent: {e}")))?;
    drop(write_end);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ticket.as_bytes())
            .map_err(|e| Refusal(format!("handing the ticket to the agent: {e}")))?;
    }
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(std::fs::File::from(read_end));
    let _ = std::io::BufRead::read_line(&mut reader, &mut line);
    let ev: serde_json::Value = match serde_json::from_str(line.trim()) {
        Ok(v) => v,
        Err(_) => {
            let status = child.wait().ok();
            return refuse(format!(
                "the agent exited before the mount was live ({}); see {}",
                status.map(|s| s.to_string()).unwrap_or_default(),
                log_path.display()
            ));
        }
    };
    if ev["event"] == "mounted" {
        let human = format!(
            "mounted {} at {} ({}, session {}, expires {}, agent pid {})",
            ev["workspace"].as_str().unwrap_or(""),
            mountpoint.display(),
            ev["mode"].as_str().unwrap_or(""),
            ev["session_id"].as_str().unwrap_or(""),
            ev["expires_at"].as_str().unwrap_or(""),
            child.id()
        );
        emit(args.json, &ev, &human);
        Ok(())
    } else {
        let _ = child.wait();
        refuse(ev["message"].as_str().unwrap_or("mount failed").to_owned())
    }
}

/// `unmount`: asks the agent holding the mount to unmount and end its session; clears a mount
/// left by a killed agent.
pub fn unmount(mountpoint: &Path, runtime_dir: &Path) -> Result<String> {
    let abs = registry::absolute(mountpoint);
    let mp = abs.to_string_lossy().into_owned();
    let reg = Registry::new(runtime_dir);
    let record = reg.get(&mp);
    let mounted = registry::mount_at(&abs);
    if let Some(m) = &mounted
        && !m.is_grantfs()
    {
        return refuse(format!(
            "{mp} is not a grantfs mount ({} is mounted there)",
            m.fstype
        ));
    }
    if let Some(r) = &record
        && registry::pid_alive(r.pid)
    {
        // SAFETY: plain kill(2) of a pid we recorded.
        unsafe { libc::kill(r.pid as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !registry::pid_alive(r.pid) && registry::mount_at(&abs).is_none() {
                reg.remove(&mp);
                return Ok(format!("unmounted {mp} (session {} ended)", r.session_id));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        return refuse(format!(
            "the agent (pid {}) did not unmount {mp} within 10 s",
            r.pid
        ));
    }
    match mounted {
        Some(_) => {
            registry::detach(&abs)
                .map_err(|e| Refusal(format!("detaching the stale mount at {mp}: {e}")))?;
            reg.remove(&mp);
            Ok(format!(
                "cleared the stale grantfs mount at {mp} (its agent was gone)"
            ))
        }
        None if record.is_some() => {
            reg.remove(&mp);
            Ok(format!(
                "nothing was mounted at {mp}; removed its stale record"
            ))
        }
        None => refuse(format!("nothing is mounted at {mp}")),
    }
}

/// `status`: this host's mounts.
pub fn status(mountpoint: Option<&Path>, runtime_dir: &Path, json_mode: bool) -> Result<String> {
    let reg = Registry::new(runtime_dir);
    let mut rows: Vec<_> = reg.all().into_iter().map(|r| reg.status(r)).collect();
    if let Some(m) = mountpoint {
        let mp = registry::absolute(m).to_string_lossy().into_owned();
        rows.retain(|s| s.record.mountpoint == mp);
        if rows.is_empty() {
            return refuse(format!("no grantfs mount at {mp}"));
        }
    }
    if json_mode {
        return Ok(serde_json::to_string(&json!({"mounts": rows}))?);
    }
    if rows.is_empty() {
        return Ok("no grantfs mounts".into());
    }
    let mut out = format!(
        "{:<28} {:<24} {:<4} {:<28} {:<26} {:<24} {}",
        "MOUNTPOINT", "WORKSPACE", "MODE", "SESSION", "GATE", "EXPIRES", "HEALTH"
    );
    for s in rows {
        let r = &s.record;
        out.push_str(&format!(
            "\n{:<28} {:<24} {:<4} {:<28} {:<26} {:<24} {}",
            r.mountpoint, r.workspace, r.mode, r.session_id, r.gate, r.expires_at, s.health
        ));
    }
    Ok(out)
}
