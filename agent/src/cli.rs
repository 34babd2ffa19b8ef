//! The command line of grantfs-agent, exactly as the contract states it; every option has a
//! `GRANTFS_<OPTION>` environment twin. Parsing only: what the commands do is in `run`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "grantfs-agent",
    version,
    about = "Mount a grantfs workspace with a mount ticket; every syscall is checked against the session"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mount WORKSPACE at MOUNTPOINT with a ticket (never taken from an argument).
    Mount(MountArgs),
    /// Unmount a grantfs mount cleanly (also one left behind by a killed agent).
    Unmount {
        mountpoint: PathBuf,
        #[arg(
            long,
            env = "GRANTFS_RUNTIME_DIR",
            default_value = "/run/grantfs",
            hide = true
        )]
        runtime_dir: PathBuf,
    },
    /// List this host's grantfs mounts.
    Status {
        mountpoint: Option<PathBuf>,
        #[arg(long, env = "GRANTFS_JSON")]
        json: bool,
        #[arg(
            long,
            env = "GRANTFS_RUNTIME_DIR",
            default_value = "/run/grantfs",
            hide = true
        )]
        runtime_dir: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// The workspace: handle/name, grantfs://handle/name, or the bare name the ticket names.
    pub workspace: String,
    pub mountpoint: PathBuf,
    /// Read the ticket from standard input.
    #[arg(long, env = "GRANTFS_TICKET_STDIN", conflicts_with = "ticket_file")]
    pub ticket_stdin: bool,
    /// Read the ticket from a file.
    #[arg(long, env = "GRANTFS_TICKET_FILE")]
    pub ticket_file: Option<PathBuf>,
    /// Control plane base URL (default: the ticket's issuer).
    #[arg(long, env = "GRANTFS_CONTROL")]
    pub control: Option<String>,
    /// Where workspaces live: <data-root>/<handle>/<name>.
    #[arg(
        long,
        env = "GRANTFS_DATA_ROOT",
        default_value = "/var/lib/grantfs/workspaces"
    )]
    pub data_root: PathBuf,
    /// Stay in the foreground (default: detach once the mount is live).
    #[arg(long, env = "GRANTFS_FOREGROUND")]
    pub foreground: bool,
    /// Let users other than the mounting one use the mount.
    #[arg(long, env = "GRANTFS_ALLOW_OTHER")]
    pub allow_other: bool,
    /// Seconds without contact with the control plane before the mount fails closed.
    #[arg(long, env = "GRANTFS_OFFLINE_GRACE", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub offline_grace: u64,
    /// Print events as JSON lines.
    #[arg(long, env = "GRANTFS_JSON")]
    pub json: bool,
    /// This mount is the only writer of the workspace on this host: keep kernel caches for 60 s
    /// and across our own writes (faster metadata and re-reads; changes made beside the mount may
    /// take up to 60 s to show). Revocation still drops every cache at once.
    #[arg(long, env = "GRANTFS_EXCLUSIVE")]
    pub exclusive: bool,
    /// FUSE worker threads.
    #[arg(long, env = "GRANTFS_THREADS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=64), hide = true)]
    pub threads: u64,
    /// Directory of this host's mount records.
    #[arg(
        long,
        env = "GRANTFS_RUNTIME_DIR",
        default_value = "/run/grantfs",
        hide = true
    )]
    pub runtime_dir: PathBuf,
    /// Internal: the descriptor on which a detached agent reports readiness to its parent.
    #[arg(long, hide = true)]
    pub ready_fd: Option<i32>,
}
