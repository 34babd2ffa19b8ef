//! The inode table: FUSE inode numbers ↔ backing (dev, ino), each holding an `O_PATH` fd and the
//! kernel's lookup count, plus a bounded record of the names it was looked up by (for cache
//! invalidation). No syscalls happen under the table lock.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use super::Error;

/// The FUSE root inode number.
pub const ROOT_INO: u64 = 1;

/// How many (parent, name) records one inode keeps (more only for many hard links).
const MAX_NAMES_PER_INODE: usize = 4;

#[derive(Debug)]
pub(crate) struct Inode {
    pub ino: u64,
    pub dev: u64,
    pub backing_ino: u64,
    /// `S_IFMT` bits of the backing file.
    pub fmt: u32,
    pub fd: OwnedFd,
    lookups: AtomicU64,
    names: Mutex<Vec<(u64, OsString)>>,
}

impl Inode {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn is_dir(&self) -> bool {
        self.fmt == libc::S_IFDIR
    }

    pub fn is_symlink(&self) -> bool {
        self.fmt == libc::S_IFLNK
    }

    fn remember_name(&self, parent: u64, name: &OsStr) {
        let mut names = self.names.lock().unwrap_or_else(PoisonError::into_inner);
        if names.iter().any(|(p, n)| *p == parent && n == name) {
            return;
        }
        if names.len() >= MAX_NAMES_PER_INODE {
            names.remove(0);
        }
        names.push((parent, name.to_owned()));
    }
}

#[derive(Debug, Default)]
struct Tables {
    by_ino: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<(u64, u64), u64>,
}

#[derive(Debug)]
pub(crate) struct InodeTable {
    tables: RwLock<Tables>,
    next_ino: AtomicU64,
}

impl InodeTable {
    pub fn new(root_fd: OwnedFd, st: &libc::stat) -> InodeTable {
        let root = Arc::new(Inode {
            ino: ROOT_INO,
            dev: st.st_dev,
            backing_ino: st.st_ino,
            fmt: st.st_mode & libc::S_IFMT,
            fd: root_fd,
            // The root is never forgotten: pin it with one extra reference.
            lookups: AtomicU64::new(1),
            names: Mutex::new(Vec::new()),
        });
        let mut t = Tables::default();
        t.by_key.insert((root.dev, root.backing_ino), ROOT_INO);
        t.by_ino.insert(ROOT_INO, root);
        InodeTable {
            tables: RwLock::new(t),
            next_ino: AtomicU64::new(ROOT_INO + 1),
        }
    }

    pub fn get(&self, ino: u64) -> Result<Arc<Inode>, Error> {
        self.read()
            .by_ino
            .get(&ino)
            .cloned()
            .ok_or(Error::UnknownInode(ino))
    }

    /// The FUSE inode number of a backing (dev, ino), if the kernel currently knows it.
    pub fn find(&self, dev: u64, backing_ino: u64) -> Option<u64> {
        self.read().by_key.get(&(dev, backing_ino)).copied()
    }

    /// Records one kernel lookup of the file `fd`/`st` reached as `parent`/`name`. Returns the
    /// inode and, when it was already known, the now redundant fd for the caller to drop
    /// outside the lock.
    pub fn insert_or_ref(
        &self,
        fd: OwnedFd,
        st: &libc::stat,
        parent: u64,
        name: &OsStr,
    ) -> (Arc<Inode>, Option<OwnedFd>) {
        let key = (st.st_dev, st.st_ino);
        {
            let t = self.read();
            if let Some(inode) = t.by_key.get(&key).and_then(|i| t.by_ino.get(i)) {
                inode.lookups.fetch_add(1, Ordering::AcqRel);
                let inode = inode.clone();
                drop(t);
                inode.remember_name(parent, name);
                return (inode, Some(fd));
            }
        }
        let mut t = self.write();
        if let Some(inode) = t.by_key.get(&key).and_then(|i| t.by_ino.get(i)) {
            inode.lookups.fetch_add(1, Ordering::AcqRel);
            let inode = inode.clone();
            drop(t);
            inode.remember_name(parent, name);
            return (inode, Some(fd));
        }
        let ino = self.next_ino.fetch_add(1, Ordering::Relaxed);
        let inode = Arc::new(Inode {
            ino,
            dev: st.st_dev,
            backing_ino: st.st_ino,
            fmt: st.st_mode & libc::S_IFMT,
            fd,
            lookups: AtomicU64::new(1),
            names: Mutex::new(vec![(parent, name.to_owned())]),
        });
        t.by_key.insert(key, ino);
        t.by_ino.insert(ino, inode.clone());
        (inode, None)
    }

    /// Drops `n` kernel references; the inode (and its fd) goes when none are left. The removed
    /// inode is returned so its fd is closed after the lock is released.
    pub fn forget(&self, ino: u64, n: u64) -> Option<Arc<Inode>> {
        if ino == ROOT_INO {
            return None;
        }
        let mut t = self.write();
        let inode = t.by_ino.get(&ino)?;
        let prev = inode
            .lookups
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                Some(c.saturating_sub(n))
            })
            .unwrap_or(0);
        if prev > n {
            return None;
        }
        let inode = t.by_ino.remove(&ino)?;
        if t.by_key.get(&(inode.dev, inode.backing_ino)) == Some(&ino) {
            t.by_key.remove(&(inode.dev, inode.backing_ino));
        }
        Some(inode)
    }

    pub fn lookups(&self, ino: u64) -> Option<u64> {
        self.read()
            .by_ino
            .get(&ino)
            .map(|i| i.lookups.load(Ordering::Acquire))
    }

    pub fn len(&self) -> usize {
        self.read().by_ino.len()
    }

    /// Every known inode and every recorded (parent, name) entry, copied out of the lock.
    pub fn snapshot(&self) -> (Vec<u64>, Vec<(u64, OsString)>) {
        let inodes: Vec<Arc<Inode>> = self.read().by_ino.values().cloned().collect();
        let mut inos = Vec::with_capacity(inodes.len());
        let mut entries = Vec::new();
        for i in &inodes {
            inos.push(i.ino);
            let names = i.names.lock().unwrap_or_else(PoisonError::into_inner);
            entries.extend(names.iter().cloned());
        }
        (inos, entries)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Tables> {
        self.tables.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Tables> {
        self.tables.write().unwrap_or_else(PoisonError::into_inner)
    }
}
