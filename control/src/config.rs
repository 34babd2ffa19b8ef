//! Configuration of the server and the admin commands, and how to open what it names (state dir,
//! store). Parsed from the command line by main.rs; nothing here reads env vars or argv.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use grantfs::Handle;

use crate::store::Store;
use crate::store::sqlite::{Durability, SqliteStore};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: String,
    pub state_dir: PathBuf,
    /// `sqlite:PATH` / a path, or a `postgres://` URL; default `<state-dir>/control.db`.
    pub database: Option<String>,
    /// Public base URL; default `http://<bound address>`.
    pub public_url: Option<String>,
    pub keepalive: Duration,
    pub bootstrap_handle: Handle,
    pub durability: Durability,
    /// Ticket requests per second per API key (0 = unlimited).
    pub rate_limit_tickets: u32,
    /// Ticket exchanges per second per account (0 = unlimited).
    pub rate_limit_exchanges: u32,
}

/// Creates the state dir (0700) if missing.
pub fn ensure_state_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir).with_context(|| format!("creating state dir {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .with_context(|| format!("setting mode of {}", dir.display()))?;
    }
    if !dir.is_dir() {
        bail!("state dir {} is not a directory", dir.display());
    }
    Ok(())
}

/// Opens the store a database setting names.
pub fn open_store(
    state_dir: &Path,
    database: Option<&str>,
    durability: Durability,
) -> Result<Arc<dyn Store>> {
    let path = match database {
        None => state_dir.join("control.db"),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            bail!("the PostgreSQL store is not available in this build; use SQLite (the default)")
        }
        Some(url) => PathBuf::from(
            url.strip_prefix("sqlite://")
                .or_else(|| url.strip_prefix("sqlite:"))
                .unwrap_or(url),
        ),
    };
    let store = SqliteStore::open(&path, durability)
        .map_err(|e| anyhow::anyhow!("opening database {}: {e}", path.display()))?;
    Ok(Arc::new(store))
}

/// Writes a secret file with mode 0600, atomically (a temporary file, synced, renamed into place,
/// then the directory synced), replacing any old one.
pub fn write_secret(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
