//! Store faults an operator meets: the state disk full (a small tmpfs) and the database locked by
//! another process. Each is a clear `unavailable` refusal that changes nothing, every
//! acknowledged change stays, and writes work again once the fault is gone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::path::Path;
use std::process::Command;

use grantfs::{Handle, Mode, TenantSlug, Timestamp, WorkspaceName, WorkspaceRef};
use grantfs_control::store::sqlite::{Durability, SqliteStore};
use grantfs_control::store::{Actor, GrantQuery, NewGrant, Store, StoreError};

fn actor() -> Actor {
    Actor {
        account: Handle::parse("admin").unwrap(),
        key_id: "key_faults".into(),
    }
}

fn setup(store: &SqliteStore) -> NewGrant {
    let a = actor();
    let now = Timestamp::now();
    store.bootstrap(&a.account, now).unwrap();
    let name = WorkspaceName::parse("ws").unwrap();
    store.create_workspace(&a, &name, now).unwrap();
    let tenant = TenantSlug::parse("acme").unwrap();
    store
        .create_tenant(&a, &tenant, None, serde_json::json!({}), now)
        .unwrap();
    NewGrant {
        workspace: WorkspaceRef {
            handle: a.account.clone(),
            name,
        },
        tenant,
        runtime: None,
        mode: Mode::Rw,
        ttl_secs: None,
    }
}

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// A tmpfs of `size`, or `None` when this process may not mount (not root).
    fn mount(size: &str) -> Option<(tempfile::TempDir, Tmpfs)> {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if std::env::var_os("REQUIRE_FUSE").is_some() {
                panic!("cannot mount a tmpfs (REQUIRE_FUSE=1 wants the fault tests to run)");
            }
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
            return None;
        }
        let p = dir.path().to_owned();
        Some((dir, Tmpfs(p)))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn fill(dir: &Path) -> std::path::PathBuf {
    // Take (nearly) all free space with one file.
    let filler = dir.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    filler
}

#[test]
fn a_full_state_disk_refuses_clearly_loses_nothing_and_recovers() {
    let Some((_dir, fs)) = Tmpfs::mount("4m") else {
        return;
    };
    let store = SqliteStore::open(&fs.0.join("control.db"), Durability::Process).unwrap();
    let g = setup(&store);
    let a = actor();
    let filler = fill(&fs.0);
    let mut acknowledged = Vec::new();
    let mut refusal = None;
    for _ in 0..20_000 {
        match store.create_grant(&a, &g, Timestamp::now()) {
            Ok(grant) => acknowledged.push(grant.id),
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let refusal = refusal.expect("a full disk must refuse a write");
    match &refusal {
        StoreError::Unavailable(m) => assert!(m.contains("disk is full"), "{m}"),
        other => panic!("expected a clear unavailable error, got {other:?}"),
    }
    // Space returns: writes work again, nothing acknowledged is lost, the database is sound.
    std::fs::remove_file(filler).unwrap();
    let after = store.create_grant(&a, &g, Timestamp::now()).unwrap();
    acknowledged.push(after.id);
    let listed: std::collections::HashSet<_> = store
        .list_grants(&a.account, &GrantQuery::default(), Timestamp::now())
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    for id in &acknowledged {
        assert!(listed.contains(id), "acknowledged grant {id} lost");
    }
    assert_eq!(listed.len(), acknowledged.len());
    drop(store);
    let check = rusqlite::Connection::open(fs.0.join("control.db"))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
        .unwrap();
    assert_eq!(check, "ok");
}

#[test]
fn a_database_locked_by_another_process_refuses_clearly_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("control.db");
    let store = SqliteStore::open(&path, Durability::Process).unwrap();
    let g = setup(&store);
    let a = actor();
    let before = store.create_grant(&a, &g, Timestamp::now()).unwrap();
    // Another process (here: another connection) holds the write lock.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = std::time::Instant::now();
    let err = store.create_grant(&a, &g, Timestamp::now()).unwrap_err();
    match &err {
        StoreError::Unavailable(m) => assert!(m.contains("locked"), "{m}"),
        other => panic!("expected a clear unavailable error, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    other.execute_batch("ROLLBACK").unwrap();
    let after = store.create_grant(&a, &g, Timestamp::now()).unwrap();
    let listed: Vec<_> = store
        .list_grants(&a.account, &GrantQuery::default(), Timestamp::now())
        .unwrap()
        .into_iter()
        .map(|g| g.id)
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&before.id) && listed.contains(&after.id));
    // (The refusal itself could not be audited: the database was locked. Acknowledged changes
    // always are, in their own transaction.)
    let audit = store.list_audit(Some(&a.account), 0, 1000).unwrap();
    assert_eq!(
        audit
            .iter()
            .filter(|e| e.action == "grant.create" && e.result == "ok")
            .count(),
        2
    );
}
