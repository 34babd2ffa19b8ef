//! The ticket signing keys: Ed25519, PKCS#8 files (0600) in `<state-dir>/signing/`, the newest one
//! signing; rotation adds a key, and an older key stays published in the JWKS while any ticket it
//! signed is unexpired. Signing and verifying themselves live in `grantfs::ticket`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use grantfs::Timestamp;
use grantfs::ids::random_base62;
use grantfs::ticket::{Jwk, JwkSet, TicketVerifier};
use jsonwebtoken::EncodingKey;

/// The key that signs new tickets.
pub struct CurrentKey {
    pub kid: String,
    pub key: EncodingKey,
}

#[derive(Debug, Clone)]
pub struct PublicKey {
    pub kid: String,
    pub created: i64,
    pub public: [u8; 32],
}

struct Keys {
    current: Arc<CurrentKey>,
    /// Oldest first; the last one is the current key.
    public: Vec<PublicKey>,
    files: Vec<String>,
}

pub struct KeyRing {
    dir: PathBuf,
    keys: RwLock<Keys>,
}

fn key_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("signing")
}

/// `k<unix millis>-<random>`: sortable by creation (strictly after every key in `existing`), unique.
fn new_kid(existing: &[String]) -> String {
    let newest = existing
        .iter()
        .filter_map(|f| kid_millis(f))
        .max()
        .unwrap_or(0);
    let ms = Timestamp::now().millis().max(newest + 1);
    format!("k{ms:013}-{}", random_base62(6))
}

fn kid_millis(kid: &str) -> Option<i64> {
    kid.get(1..14)?.parse().ok()
}

fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pk8") {
            files.push(name);
        }
    }
    files.sort();
    Ok(files)
}

/// Writes a new key file (0600) and returns its kid.
pub fn generate(state_dir: &Path) -> Result<String> {
    let dir = key_dir(state_dir);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    let kid = new_kid(&list_files(&dir)?);
    let sk = SigningKey::generate(&mut rand::rngs::OsRng);
    let der = sk
        .to_pkcs8_der()
        .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
    crate::config::write_secret(&dir.join(format!("{kid}.pk8")), der.as_bytes())?;
    Ok(kid)
}

fn load(dir: &Path) -> Result<Keys> {
    let files = list_files(dir)?;
    let mut public = Vec::new();
    let mut current = None;
    for name in &files {
        let path = dir.join(name);
        let der = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let sk = SigningKey::from_pkcs8_der(&der)
            .map_err(|e| anyhow::anyhow!("{} is not a PKCS#8 Ed25519 key: {e}", path.display()))?;
        let kid = name.trim_end_matches(".pk8").to_owned();
        let created = kid_millis(&kid).unwrap_or_default();
        public.push(PublicKey {
            kid: kid.clone(),
            created,
            public: sk.verifying_key().to_bytes(),
        });
        current = Some(CurrentKey {
            kid,
            key: EncodingKey::from_ed_der(&der),
        });
    }
    let Some(current) = current else {
        bail!("no signing key in {}", dir.display());
    };
    Ok(Keys {
        current: Arc::new(current),
        public,
        files,
    })
}

impl KeyRing {
    /// Loads the keys of a state dir, creating the first one on first start.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = key_dir(state_dir);
        if !dir.exists() || list_files(&dir)?.is_empty() {
            let kid = generate(state_dir)?;
            tracing::info!(kid, "created the first ticket signing key");
        }
        let keys = load(&dir)?;
        Ok(Self {
            dir,
            keys: RwLock::new(keys),
        })
    }

    pub fn current(&self) -> Arc<CurrentKey> {
        match self.keys.read() {
            Ok(k) => k.current.clone(),
            Err(p) => p.into_inner().current.clone(),
        }
    }

    pub fn public_keys(&self) -> Vec<PublicKey> {
        match self.keys.read() {
            Ok(k) => k.public.clone(),
            Err(p) => p.into_inner().public.clone(),
        }
    }

    /// Picks up keys added by `signing-key rotate` since the last look.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let files = list_files(&self.dir)?;
        let same = match self.keys.read() {
            Ok(k) => k.files == files,
            Err(_) => false,
        };
        if same {
            return Ok(false);
        }
        let keys = load(&self.dir)?;
        tracing::info!(kid = keys.current.kid, "signing keys reloaded");
        match self.keys.write() {
            Ok(mut k) => *k = keys,
            Err(p) => *p.into_inner() = keys,
        }
        Ok(true)
    }
}

/// The published key set: the current key, plus every older key for which `still_needed(kid)`
/// (some ticket it signed has not expired).
pub fn jwks(ring: &KeyRing, mut still_needed: impl FnMut(&str) -> bool) -> JwkSet {
    let public = ring.public_keys();
    let current = ring.current().kid.clone();
    JwkSet {
        keys: public
            .iter()
            .filter(|k| k.kid == current || still_needed(&k.kid))
            .map(|k| Jwk::ed25519(&k.kid, &k.public))
            .collect(),
    }
}

pub fn verifier(set: &JwkSet, issuer: &str) -> Result<TicketVerifier> {
    TicketVerifier::from_jwks(set, Some(issuer.to_owned())).map_err(|e| anyhow::anyhow!(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_open_creates_a_private_key_file() {
        let d = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(d.path()).unwrap();
        let kid = ring.current().kid.clone();
        let path = d.path().join("signing").join(format!("{kid}.pk8"));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second open reuses it.
        assert_eq!(KeyRing::open(d.path()).unwrap().current().kid, kid);
    }

    #[test]
    fn rotation_adds_a_kid_and_keeps_needed_old_keys() {
        let d = tempfile::tempdir().unwrap();
        let ring = KeyRing::open(d.path()).unwrap();
        let old = ring.current().kid.clone();
        let new = generate(d.path()).unwrap();
        assert!(ring.reload_if_changed().unwrap());
        assert_eq!(ring.current().kid, new);
        let all = jwks(&ring, |_| true);
        assert_eq!(all.keys.len(), 2);
        let only_current = jwks(&ring, |_| false);
        assert_eq!(only_current.keys.len(), 1);
        assert_eq!(only_current.keys[0].kid, new);
        assert_ne!(old, new);
    }
}
