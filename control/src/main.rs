//! grantfs-control command line: parse, build the config, run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use grantfs::{Handle, Timestamp};
use grantfs_control::config::{ServeConfig, ensure_state_dir, open_store};
use grantfs_control::store::sqlite::Durability;

#[derive(Parser)]
#[command(
    name = "grantfs-control",
    version,
    about = "grantfs control plane: workspaces, tenants, grants, mount tickets, revocation"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct StateArgs {
    /// Directory holding control.db, the signing keys and admin.key.
    #[arg(
        long,
        env = "GRANTFS_STATE_DIR",
        default_value = "/var/lib/grantfs/control"
    )]
    state_dir: PathBuf,
    /// Database: a SQLite path (default <state-dir>/control.db) or a postgres:// URL.
    #[arg(long, env = "GRANTFS_DATABASE")]
    database: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DurabilityArg {
    /// A commit survives a crash of the process (SQLite WAL, synchronous=NORMAL).
    Process,
    /// A commit survives power loss (synchronous=FULL).
    Power,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the HTTP API.
    Serve {
        #[arg(long, env = "GRANTFS_LISTEN", default_value = "127.0.0.1:7070")]
        listen: String,
        #[command(flatten)]
        state: StateArgs,
        /// Public base URL (tickets' issuer); default http://<listen address>.
        #[arg(long, env = "GRANTFS_PUBLIC_URL")]
        public_url: Option<String>,
        /// Seconds between keepalive comments on event streams.
        #[arg(long, env = "GRANTFS_KEEPALIVE_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
        keepalive_seconds: u64,
        /// Account created on first start with an empty state.
        #[arg(long, env = "GRANTFS_BOOTSTRAP_HANDLE", default_value = "admin")]
        bootstrap_handle: String,
        #[arg(
            long,
            env = "GRANTFS_DURABILITY",
            value_enum,
            default_value = "process"
        )]
        durability: DurabilityArg,
        /// Ticket requests per second per API key (bursts up to the same number; 0 = unlimited).
        #[arg(long, env = "GRANTFS_RATE_LIMIT_TICKETS", default_value_t = 5000)]
        rate_limit_tickets: u32,
        /// Ticket exchanges per second per account (0 = unlimited).
        #[arg(long, env = "GRANTFS_RATE_LIMIT_EXCHANGES", default_value_t = 5000)]
        rate_limit_exchanges: u32,
    },
    /// The audit trail (on the local state dir).
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Accounts (on the local state dir).
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// API keys of an account (on the local state dir).
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Ticket signing keys (on the local state dir).
    SigningKey {
        #[command(subcommand)]
        cmd: SigningKeyCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Print audit records as JSON lines, oldest first; with --follow, keep printing new ones.
    Tail {
        /// Only this account's records.
        #[arg(long)]
        account: Option<String>,
        /// Start after this record id (default: the last --limit records).
        #[arg(long)]
        since: Option<i64>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long, short)]
        follow: bool,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account and print its first API key.
    Create {
        handle: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create an API key for an account and print it.
    Create {
        handle: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// List an account's API keys (ids, never secrets).
    List {
        handle: String,
        #[command(flatten)]
        state: StateArgs,
    },
    /// Revoke an API key by id.
    Revoke {
        handle: String,
        key_id: String,
        #[command(flatten)]
        state: StateArgs,
    },
}

#[derive(Subcommand)]
enum SigningKeyCmd {
    /// Add a new signing key; new tickets use it, old keys stay published until their tickets expire.
    Rotate {
        #[arg(
            long,
            env = "GRANTFS_STATE_DIR",
            default_value = "/var/lib/grantfs/control"
        )]
        state_dir: PathBuf,
    },
    /// List signing key ids.
    List {
        #[arg(
            long,
            env = "GRANTFS_STATE_DIR",
            default_value = "/var/lib/grantfs/control"
        )]
        state_dir: PathBuf,
    },
}

fn handle(s: &str) -> Result<Handle> {
    Handle::parse(s).map_err(|e| anyhow::anyhow!("{e}"))
}

fn store_of(state: &StateArgs) -> Result<std::sync::Arc<dyn grantfs_control::store::Store>> {
    ensure_state_dir(&state.state_dir)?;
    open_store(
        &state.state_dir,
        state.database.as_deref(),
        Durability::Process,
    )
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRANTFS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("grantfs-control: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let now = Timestamp::now();
    match cli.cmd {
        Cmd::Serve {
            listen,
            state,
            public_url,
            keepalive_seconds,
            bootstrap_handle,
            durability,
            rate_limit_tickets,
            rate_limit_exchanges,
        } => {
            let cfg = ServeConfig {
                listen,
                state_dir: state.state_dir,
                database: state.database,
                public_url,
                keepalive: Duration::from_secs(keepalive_seconds),
                bootstrap_handle: handle(&bootstrap_handle)?,
                durability: match durability {
                    DurabilityArg::Process => Durability::Process,
                    DurabilityArg::Power => Durability::Power,
                },
                rate_limit_tickets,
                rate_limit_exchanges,
            };
            let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
            rt.block_on(grantfs_control::server::serve(cfg))
        }
        Cmd::Audit {
            cmd:
                AuditCmd::Tail {
                    account,
                    since,
                    limit,
                    follow,
                    state,
                },
        } => {
            let store = store_of(&state)?;
            let account = account.as_deref().map(handle).transpose()?;
            let mut since = match since {
                Some(s) => s,
                None => {
                    // The last `limit` records: find the newest id, step back.
                    let mut last = 0;
                    loop {
                        let page = store
                            .list_audit(account.as_ref(), last, 1000)
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        match page.last() {
                            Some(e) => last = e.id,
                            None => break,
                        }
                    }
                    (last - i64::from(limit)).max(0)
                }
            };
            loop {
                let page = store
                    .list_audit(account.as_ref(), since, limit.clamp(1, 1000))
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                for e in &page {
                    println!("{}", serde_json::to_string(e)?);
                    since = e.id;
                }
                if !follow {
                    return Ok(());
                }
                if page.is_empty() {
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        Cmd::Account {
            cmd: AccountCmd::Create { handle: h, state },
        } => {
            let k = store_of(&state)?
                .create_account(&handle(&h)?, now)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            eprintln!("created account {} with API key {}", k.account, k.key_id);
            println!("{}", k.secret);
            Ok(())
        }
        Cmd::Key { cmd } => match cmd {
            KeyCmd::Create { handle: h, state } => {
                let k = store_of(&state)?
                    .create_key(&handle(&h)?, now)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                eprintln!("created API key {} for account {}", k.key_id, k.account);
                println!("{}", k.secret);
                Ok(())
            }
            KeyCmd::List { handle: h, state } => {
                let keys = store_of(&state)?
                    .list_keys(&handle(&h)?)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                for k in keys {
                    let revoked = k
                        .revoked_at
                        .map(|t| format!("revoked {t}"))
                        .unwrap_or_else(|| "active".into());
                    println!(
                        "{}\t{}\tcreated {}\t{}",
                        k.key_id, k.account, k.created_at, revoked
                    );
                }
                Ok(())
            }
            KeyCmd::Revoke {
                handle: h,
                key_id,
                state,
            } => {
                let k = store_of(&state)?
                    .revoke_key(&handle(&h)?, &key_id, now)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                println!("revoked API key {} of account {}", k.key_id, k.account);
                Ok(())
            }
        },
        Cmd::SigningKey { cmd } => match cmd {
            SigningKeyCmd::Rotate { state_dir } => {
                ensure_state_dir(&state_dir)?;
                grantfs_control::signing::KeyRing::open(&state_dir)?;
                let kid = grantfs_control::signing::generate(&state_dir)?;
                println!("{kid}");
                eprintln!("new signing key {kid}; a running server picks it up within 2 s");
                Ok(())
            }
            SigningKeyCmd::List { state_dir } => {
                let ring = grantfs_control::signing::KeyRing::open(&state_dir)?;
                let current = ring.current().kid.clone();
                for k in ring.public_keys() {
                    println!(
                        "{}{}",
                        k.kid,
                        if k.kid == current { "\tcurrent" } else { "" }
                    );
                }
                Ok(())
            }
        },
    }
}
