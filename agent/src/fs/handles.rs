//! Open file and directory handles: FUSE `fh` numbers ↔ real descriptors of the backing files.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use super::Error;

#[derive(Debug)]
pub(crate) struct Handle {
    pub ino: u64,
    pub fd: OwnedFd,
    /// Serializes `lseek` + `getdents64` on a directory handle.
    dir_pos: Mutex<()>,
}

impl Handle {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn lock_dir(&self) -> MutexGuard<'_, ()> {
        self.dir_pos.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Debug)]
pub(crate) struct HandleTable {
    map: RwLock<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl HandleTable {
    pub fn new() -> HandleTable {
        HandleTable {
            map: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }

    pub fn insert(&self, ino: u64, fd: OwnedFd) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        let h = Arc::new(Handle {
            ino,
            fd,
            dir_pos: Mutex::new(()),
        });
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(fh, h);
        fh
    }

    pub fn get(&self, fh: u64) -> Result<Arc<Handle>, Error> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&fh)
            .cloned()
            .ok_or(Error::UnknownHandle(fh))
    }

    /// Removes the handle; its fd closes when the last in-flight user drops it.
    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&fh)
    }

    pub fn len(&self) -> usize {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}
