//! The passthrough filesystem over one workspace directory: plain Rust in and out, every backing
//! access through dir fds and `*at` calls that cannot leave the root. Knows nothing of fuser or of
//! the session gate (`fuse.rs` asks the gate and translates).
//!
//! Containment: the kernel hands us (parent inode, one name); each inode holds an `O_PATH` fd, and
//! children are opened with `openat2(parent_fd, name, O_PATH|O_NOFOLLOW, RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, so neither `..` nor a symlink can lead outside.
//! Turning an `O_PATH` fd into a real one (open, truncate, xattrs) goes through
//! `/proc/self/fd/N`, like libfuse's `passthrough_ll`: that magic link names exactly the inode the
//! fd holds and resolves nowhere else.

mod error;
mod handles;
mod inode;

use std::ffi::{CStr, CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::Error;
pub use inode::ROOT_INO;

use handles::HandleTable;
use inode::{Inode, InodeTable};

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Regular,
    Directory,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    fn from_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::Fifo,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }

    fn from_dirent_type(t: u8) -> FileKind {
        match t {
            libc::DT_DIR => FileKind::Directory,
            libc::DT_LNK => FileKind::Symlink,
            libc::DT_FIFO => FileKind::Fifo,
            libc::DT_SOCK => FileKind::Socket,
            libc::DT_CHR => FileKind::CharDevice,
            libc::DT_BLK => FileKind::BlockDevice,
            _ => FileKind::Regular,
        }
    }
}

/// Attributes of a file, with the FUSE inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

/// Who asked: new files are given to this uid/gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetTime {
    Now,
    At(SystemTime),
}

/// A `setattr` request; `None` fields are left alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
pub struct Created {
    pub attr: Attr,
    pub fh: u64,
}

/// One directory entry as `readdir` hands it to its sink.
#[derive(Debug, Clone, Copy)]
pub struct DirEntry<'a> {
    pub ino: u64,
    /// The cookie of the *next* entry (pass it back as `offset` to continue after this one).
    pub offset: u64,
    pub kind: FileKind,
    pub name: &'a OsStr,
}

#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Xattr {
    /// The caller asked for the size only (buffer size 0).
    Size(u32),
    Data(Vec<u8>),
}

/// A POSIX byte-range lock as FUSE describes it (`end` inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lock {
    pub start: u64,
    pub end: u64,
    pub typ: i32,
    pub pid: u32,
}

/// How many entries the kernel may hold per inode, and what invalidation needs to name.
#[derive(Debug, Clone, Default)]
pub struct KnownEntries {
    pub inodes: Vec<u64>,
    pub entries: Vec<(u64, OsString)>,
}

thread_local! {
    /// `getdents64` buffer, one per FUSE worker thread (no allocation per `readdir`).
    static DIRENT_BUF: std::cell::RefCell<Box<[u8]>> =
        std::cell::RefCell::new(vec![0u8; 32 * 1024].into_boxed_slice());
}

const RESOLVE_CHILD: u64 =
    libc::RESOLVE_BENEATH | libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;

/// Open flags we pass on to the backing file; everything else (O_CREAT, O_EXCL, O_NOFOLLOW,
/// O_TRUNC, the kernel's internal bits) is decided here.
const PASS_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DSYNC
    | libc::O_SYNC
    | libc::O_DIRECT
    | libc::O_NOATIME
    | libc::O_LARGEFILE;

/// FUSE's "to the end of the file" for lock ranges.
const OFFSET_MAX: u64 = i64::MAX as u64;

#[derive(Debug)]
pub struct Fs {
    inodes: InodeTable,
    handles: HandleTable,
    umask: u32,
    egid: u32,
}

impl Fs {
    /// Opens the backing directory once (`O_PATH|O_DIRECTORY`); it becomes the root inode.
    pub fn new(root: &Path) -> Result<Fs> {
        let c = CString::new(root.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidName(root.as_os_str().to_owned()))?;
        // SAFETY: c is a valid NUL-terminated path.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(Error::io("open backing root"));
        }
        // SAFETY: fd was just returned by open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let st = fstat(fd.as_raw_fd())?;
        // SAFETY: getegid cannot fail.
        let egid = unsafe { libc::getegid() };
        Ok(Fs {
            inodes: InodeTable::new(fd, &st),
            handles: HandleTable::new(),
            umask: process_umask(),
            egid,
        })
    }

    // ---- inodes -------------------------------------------------------------------------------

    /// Looks `name` up in `parent`; one kernel reference on success.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr> {
        let p = self.dir(parent)?;
        let c = component(name)?;
        self.lookup_at(&p, p.raw_fd(), &c, name)
    }

    /// Walks a relative path component by component with `lookup` (each step one reference).
    /// Used by tests and tools; the kernel itself always asks one component at a time.
    pub fn lookup_path(&self, rel: &Path) -> Result<Attr> {
        let mut attr = self.getattr(ROOT_INO, None)?;
        for comp in rel.components() {
            match comp {
                Component::Normal(n) => attr = self.lookup(attr.ino, n)?,
                Component::CurDir => {}
                Component::RootDir | Component::ParentDir | Component::Prefix(_) => {
                    return Err(Error::InvalidName(comp.as_os_str().to_owned()));
                }
            }
        }
        Ok(attr)
    }

    pub fn forget(&self, ino: u64, nlookup: u64) {
        // The removed inode (and its fd) is dropped here, outside the table lock.
        drop(self.inodes.forget(ino, nlookup));
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Attr> {
        let st = match fh.map(|fh| self.handles.get(fh)) {
            Some(Ok(h)) if h.ino == ino => fstat(h.raw_fd())?,
            Some(_) | None => fstat(self.inodes.get(ino)?.raw_fd())?,
        };
        Ok(attr_from_stat(ino, &st))
    }

    pub fn setattr(&self, ino: u64, set: SetAttr) -> Result<Attr> {
        let inode = self.inodes.get(ino)?;
        let handle = match set.fh {
            Some(fh) => self.handles.get(fh).ok(),
            None => None,
        };
        if let Some(mode) = set.mode {
            chmod_inode(&inode, mode & 0o7777)?;
        }
        if set.uid.is_some() || set.gid.is_some() {
            chown_inode(&inode, set.uid, set.gid)?;
        }
        if let Some(size) = set.size {
            let size = i64::try_from(size).map_err(|_| Error::InvalidArgument("size"))?;
            let done = match &handle {
                Some(h) => {
                    // SAFETY: plain syscall on a valid fd.
                    let r = unsafe { libc::ftruncate(h.raw_fd(), size) };
                    r == 0
                }
                None => false,
            };
            if !done {
                let fd = reopen(&inode, libc::O_WRONLY)?;
                // SAFETY: plain syscall on a valid fd.
                if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } < 0 {
                    return Err(Error::io("ftruncate"));
                }
            }
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let times = [timespec_for(set.atime), timespec_for(set.mtime)];
            utimens_inode(&inode, handle.as_ref().map(|h| h.raw_fd()), &times)?;
        }
        self.getattr(ino, None)
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let inode = self.inodes.get(ino)?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
        // SAFETY: buf is writable for buf.len() bytes; "" with an O_PATH symlink fd reads it.
        let n = unsafe {
            libc::readlinkat(
                inode.raw_fd(),
                c"".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(Error::io("readlinkat"));
        }
        buf.truncate(n as usize);
        Ok(buf)
    }

    /// Regular files, fifos and sockets; device nodes are refused (`EPERM`).
    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        _rdev: u32,
        caller: Caller,
    ) -> Result<Attr> {
        match mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {}
            libc::S_IFCHR | libc::S_IFBLK => return Err(Error::DeviceNode),
            _ => return Err(Error::InvalidArgument("mknod file type")),
        }
        let p = self.dir(parent)?;
        let c = component(name)?;
        // SAFETY: valid fd and NUL-terminated name.
        if unsafe { libc::mknodat(p.raw_fd(), c.as_ptr(), mode, 0) } < 0 {
            return Err(Error::io("mknodat"));
        }
        self.finish_new(&p, &c, name, Some(mode & 0o7777), caller)
    }

    pub fn mkdir(&self, parent: u64, name: &OsStr, mode: u32, caller: Caller) -> Result<Attr> {
        let p = self.dir(parent)?;
        let c = component(name)?;
        // SAFETY: valid fd and NUL-terminated name.
        if unsafe { libc::mkdirat(p.raw_fd(), c.as_ptr(), mode & 0o7777) } < 0 {
            return Err(Error::io("mkdirat"));
        }
        self.finish_new(&p, &c, name, Some(mode & 0o7777), caller)
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &Path,
        caller: Caller,
    ) -> Result<Attr> {
        let p = self.dir(parent)?;
        let c = component(name)?;
        let t = CString::new(target.as_os_str().as_bytes())
            .map_err(|_| Error::InvalidArgument("symlink target contains NUL"))?;
        // SAFETY: valid fd and NUL-terminated strings.
        if unsafe { libc::symlinkat(t.as_ptr(), p.raw_fd(), c.as_ptr()) } < 0 {
            return Err(Error::io("symlinkat"));
        }
        self.finish_new(&p, &c, name, None, caller)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, 0, "unlinkat")
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Result<()> {
        self.remove(parent, name, libc::AT_REMOVEDIR, "unlinkat(AT_REMOVEDIR)")
    }

    /// `flags`: 0, `RENAME_NOREPLACE` or `RENAME_EXCHANGE` (whiteouts are refused).
    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Error::InvalidArgument("rename flags"));
        }
        let p = self.dir(parent)?;
        let np = self.dir(newparent)?;
        let c = component(name)?;
        let nc = component(newname)?;
        // SAFETY: valid fds and NUL-terminated names.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                p.raw_fd(),
                c.as_ptr(),
                np.raw_fd(),
                nc.as_ptr(),
                flags,
            )
        };
        if r < 0 {
            return Err(Error::io("renameat2"));
        }
        Ok(())
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<Attr> {
        let inode = self.inodes.get(ino)?;
        let np = self.dir(newparent)?;
        let nc = component(newname)?;
        // SAFETY: valid fds and NUL-terminated names; AT_EMPTY_PATH links the fd's inode.
        let r = unsafe {
            libc::linkat(
                inode.raw_fd(),
                c"".as_ptr(),
                np.raw_fd(),
                nc.as_ptr(),
                libc::AT_EMPTY_PATH,
            )
        };
        if r < 0 {
            let first = std::io::Error::last_os_error();
            // Without CAP_DAC_READ_SEARCH AT_EMPTY_PATH is refused; the /proc link is equivalent.
            let proc = proc_fd_path(inode.raw_fd());
            // SAFETY: valid fds and NUL-terminated names.
            let r2 = unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc.as_ptr(),
                    np.raw_fd(),
                    nc.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            };
            if r2 < 0 {
                return Err(Error::from_io("linkat", first));
            }
        }
        self.lookup_at(&np, np.raw_fd(), &nc, newname)
    }

    // ---- files --------------------------------------------------------------------------------

    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        let inode = self.inodes.get(ino)?;
        if inode.is_dir() {
            return Err(Error::from_io(
                "open",
                std::io::Error::from_raw_os_error(libc::EISDIR),
            ));
        }
        let fd = reopen(&inode, flags & PASS_FLAGS)?;
        Ok(self.handles.insert(ino, fd))
    }

    /// Creates (or, without `O_EXCL`, opens an existing) `name` and opens it; one reference.
    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        caller: Caller,
    ) -> Result<Created> {
        let p = self.dir(parent)?;
        let c = component(name)?;
        let base = (flags & PASS_FLAGS) | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let perm = mode & 0o7777;
        let (fd, created) = match openat2(
            p.raw_fd(),
            &c,
            base | libc::O_CREAT | libc::O_EXCL,
            perm,
            RESOLVE_CHILD,
        ) {
            Ok(fd) => (fd, true),
            Err(e) if e.errno() == libc::EEXIST && flags & libc::O_EXCL == 0 => {
                (openat2(p.raw_fd(), &c, base, 0, RESOLVE_CHILD)?, false)
            }
            Err(e) => return Err(e),
        };
        let path_fd = reopen_path(fd.as_raw_fd())?;
        let mut st = fstat(fd.as_raw_fd())?;
        if created && self.fix_owner_and_mode(path_fd.as_raw_fd(), &st, Some(perm), caller)? {
            st = fstat(fd.as_raw_fd())?;
        }
        let (inode, dup) = self.inodes.insert_or_ref(path_fd, &st, parent, name);
        drop(dup);
        let fh = self.handles.insert(inode.ino, fd);
        Ok(Created {
            attr: attr_from_stat(inode.ino, &st),
            fh,
        })
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let n = self.read_into(fh, offset, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// `read` into the caller's buffer (the FUSE layer reuses one per worker thread, so the hot
    /// path neither allocates nor zeroes). Returns the bytes read; short only at end of file.
    pub fn read_into(&self, fh: u64, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let h = self.handles.get(fh)?;
        let off = i64::try_from(offset).map_err(|_| Error::InvalidArgument("offset"))?;
        let mut done = 0usize;
        while done < buf.len() {
            // SAFETY: the slice [done..] is writable.
            let n = unsafe {
                libc::pread(
                    h.raw_fd(),
                    buf[done..].as_mut_ptr().cast(),
                    buf.len() - done,
                    off + done as i64,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(Error::from_io("pread", e));
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        Ok(done)
    }

    pub fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let h = self.handles.get(fh)?;
        let off = i64::try_from(offset).map_err(|_| Error::InvalidArgument("offset"))?;
        let mut done = 0usize;
        while done < data.len() {
            // SAFETY: the slice [done..] is readable.
            let n = unsafe {
                libc::pwrite(
                    h.raw_fd(),
                    data[done..].as_ptr().cast(),
                    data.len() - done,
                    off + done as i64,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                if done > 0 {
                    break;
                }
                return Err(Error::from_io("pwrite", e));
            }
            done += n as usize;
        }
        u32::try_from(done).map_err(|_| Error::InvalidArgument("write size"))
    }

    /// Called on every `close()`: surfaces delayed write errors like `close(dup(fd))` does.
    pub fn flush(&self, fh: u64) -> Result<()> {
        let h = self.handles.get(fh)?;
        // SAFETY: dup of a valid fd; the duplicate is closed at once.
        let d = unsafe { libc::dup(h.raw_fd()) };
        if d < 0 {
            return Err(Error::io("dup"));
        }
        // SAFETY: d is ours.
        if unsafe { libc::close(d) } < 0 {
            return Err(Error::io("close"));
        }
        Ok(())
    }

    /// Drops the handle; its fd closes once no request uses it any more.
    pub fn release(&self, fh: u64) {
        drop(self.handles.remove(fh));
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handles.get(fh)?;
        // SAFETY: plain syscall on a valid fd.
        let r = unsafe {
            if datasync {
                libc::fdatasync(h.raw_fd())
            } else {
                libc::fsync(h.raw_fd())
            }
        };
        if r < 0 {
            return Err(Error::io("fsync"));
        }
        Ok(())
    }

    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        let h = self.handles.get(fh)?;
        let off = i64::try_from(offset).map_err(|_| Error::InvalidArgument("offset"))?;
        let len = i64::try_from(length).map_err(|_| Error::InvalidArgument("length"))?;
        // SAFETY: plain syscall on a valid fd.
        if unsafe { libc::fallocate(h.raw_fd(), mode, off, len) } < 0 {
            return Err(Error::io("fallocate"));
        }
        Ok(())
    }

    pub fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64> {
        let h = self.handles.get(fh)?;
        // SAFETY: plain syscall on a valid fd.
        let r = unsafe { libc::lseek(h.raw_fd(), offset, whence) };
        if r < 0 {
            return Err(Error::io("lseek"));
        }
        Ok(r)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
        flags: u32,
    ) -> Result<u32> {
        let hi = self.handles.get(fh_in)?;
        let ho = self.handles.get(fh_out)?;
        let mut oi = i64::try_from(offset_in).map_err(|_| Error::InvalidArgument("offset"))?;
        let mut oo = i64::try_from(offset_out).map_err(|_| Error::InvalidArgument("offset"))?;
        let len = usize::try_from(len.min(u64::from(u32::MAX))).unwrap_or(u32::MAX as usize);
        // SAFETY: valid fds; the offsets are ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_copy_file_range,
                hi.raw_fd(),
                &mut oi as *mut i64,
                ho.raw_fd(),
                &mut oo as *mut i64,
                len,
                flags,
            )
        };
        if r < 0 {
            return Err(Error::io("copy_file_range"));
        }
        u32::try_from(r).map_err(|_| Error::InvalidArgument("copy size"))
    }

    /// Tests for a conflicting lock (open-file-description locks on the handle's fd).
    pub fn getlk(&self, fh: u64, lock: Lock) -> Result<Lock> {
        let h = self.handles.get(fh)?;
        let mut fl = flock_from(lock)?;
        // SAFETY: fl is a valid struct flock.
        if unsafe { libc::fcntl(h.raw_fd(), libc::F_OFD_GETLK, &mut fl) } < 0 {
            return Err(Error::io("fcntl(F_OFD_GETLK)"));
        }
        let start = u64::try_from(fl.l_start).unwrap_or(0);
        let end = if fl.l_len == 0 {
            OFFSET_MAX
        } else {
            start.saturating_add(u64::try_from(fl.l_len).unwrap_or(1) - 1)
        };
        Ok(Lock {
            start,
            end,
            typ: i32::from(fl.l_type),
            pid: u32::try_from(fl.l_pid).unwrap_or(0),
        })
    }

    /// Takes or releases a lock; `sleep` waits for a conflicting one (blocks this worker).
    pub fn setlk(&self, fh: u64, lock: Lock, sleep: bool) -> Result<()> {
        let h = self.handles.get(fh)?;
        let fl = flock_from(lock)?;
        let cmd = if sleep {
            libc::F_OFD_SETLKW
        } else {
            libc::F_OFD_SETLK
        };
        // SAFETY: fl is a valid struct flock.
        if unsafe { libc::fcntl(h.raw_fd(), cmd, &fl) } < 0 {
            return Err(Error::io("fcntl(F_OFD_SETLK)"));
        }
        Ok(())
    }

    /// `flock(2)` on the handle's fd (`op`: `LOCK_SH`/`LOCK_EX`/`LOCK_UN`, maybe `| LOCK_NB`).
    pub fn flock(&self, fh: u64, op: i32) -> Result<()> {
        let h = self.handles.get(fh)?;
        // SAFETY: plain syscall on a valid fd.
        if unsafe { libc::flock(h.raw_fd(), op) } < 0 {
            return Err(Error::io("flock"));
        }
        Ok(())
    }

    // ---- directories --------------------------------------------------------------------------

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let inode = self.dir(ino)?;
        let fd = openat2(
            inode.raw_fd(),
            c".",
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            0,
            libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
        )?;
        Ok(self.handles.insert(ino, fd))
    }

    /// Lists entries from `offset` on; `add` returns true when its buffer is full (that entry
    /// was not taken, and the listing stops).
    pub fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>) -> bool,
    ) -> Result<()> {
        let dir = self.inodes.get(ino)?;
        self.list(fh, offset, |d_ino, off, kind, name| {
            let ino = self.dirent_ino(&dir, d_ino, name);
            Ok(add(DirEntry {
                ino,
                offset: off,
                kind,
                name,
            }))
        })
    }

    /// `readdir` with attributes; every entry handed to `add` (except `.` and `..`) counts as
    /// one lookup, and is taken back if `add` reports its buffer full.
    pub fn readdirplus(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(DirEntry<'_>, &Attr) -> bool,
    ) -> Result<()> {
        let dir = self.inodes.get(ino)?;
        let h = self.handles.get(fh)?;
        let mut added = 0usize;
        self.list(fh, offset, |d_ino, off, kind, name| {
            if is_dot(name) {
                let ino = self.dirent_ino(&dir, d_ino, name);
                let attr = dot_attr(ino);
                let full = add(
                    DirEntry {
                        ino,
                        offset: off,
                        kind,
                        name,
                    },
                    &attr,
                );
                added += usize::from(!full);
                return Ok(full);
            }
            let c = component(name)?;
            let attr = match self.lookup_at(&dir, h.raw_fd(), &c, name) {
                Ok(a) => a,
                // Gone since getdents: skip it.
                Err(e) if e.errno() == libc::ENOENT => return Ok(false),
                Err(e) if added > 0 => {
                    tracing::debug!(error = %e, "readdirplus stops early");
                    return Ok(true);
                }
                Err(e) => return Err(e),
            };
            let full = add(
                DirEntry {
                    ino: attr.ino,
                    offset: off,
                    kind: attr.kind,
                    name,
                },
                &attr,
            );
            if full {
                self.forget(attr.ino, 1);
            } else {
                added += 1;
            }
            Ok(full)
        })
    }

    pub fn releasedir(&self, fh: u64) {
        drop(self.handles.remove(fh));
    }

    pub fn fsyncdir(&self, fh: u64, datasync: bool) -> Result<()> {
        self.fsync(fh, datasync)
    }

    // ---- the rest -----------------------------------------------------------------------------

    pub fn statfs(&self, ino: u64) -> Result<StatFs> {
        let inode = self
            .inodes
            .get(ino)
            .or_else(|_| self.inodes.get(ROOT_INO))?;
        // SAFETY: zeroed statfs is a valid out-parameter.
        let mut s: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstatfs(inode.raw_fd(), &mut s) } < 0 {
            return Err(Error::io("fstatfs"));
        }
        Ok(StatFs {
            blocks: s.f_blocks,
            bfree: s.f_bfree,
            bavail: s.f_bavail,
            files: s.f_files,
            ffree: s.f_ffree,
            bsize: u32::try_from(s.f_bsize).unwrap_or(4096),
            namelen: u32::try_from(s.f_namelen).unwrap_or(255),
            frsize: u32::try_from(s.f_frsize).unwrap_or(4096),
        })
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let inode = self.inodes.get(ino)?;
        if inode.is_symlink() {
            return Err(Error::XattrOnSymlink);
        }
        let n = xattr_name(name)?;
        let p = proc_fd_path(inode.raw_fd());
        // SAFETY: valid C strings and value slice.
        let r = unsafe {
            libc::setxattr(
                p.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        };
        if r < 0 {
            return Err(Error::io("setxattr"));
        }
        Ok(())
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Result<Xattr> {
        let inode = self.inodes.get(ino)?;
        if inode.is_symlink() {
            return Err(Error::NoXattr);
        }
        let n = xattr_name(name)?;
        let p = proc_fd_path(inode.raw_fd());
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is writable for its length (0 asks for the size only).
        let r =
            unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        xattr_result(r, size, buf, "getxattr")
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Result<Xattr> {
        let inode = self.inodes.get(ino)?;
        if inode.is_symlink() {
            return Ok(if size == 0 {
                Xattr::Size(0)
            } else {
                Xattr::Data(Vec::new())
            });
        }
        let p = proc_fd_path(inode.raw_fd());
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is writable for its length.
        let r = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        xattr_result(r, size, buf, "listxattr")
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        let inode = self.inodes.get(ino)?;
        if inode.is_symlink() {
            return Err(Error::XattrOnSymlink);
        }
        let n = xattr_name(name)?;
        let p = proc_fd_path(inode.raw_fd());
        // SAFETY: valid C strings.
        if unsafe { libc::removexattr(p.as_ptr(), n.as_ptr()) } < 0 {
            return Err(Error::io("removexattr"));
        }
        Ok(())
    }

    /// The daemon runs as root and mounts with `default_permissions`, so the kernel has already
    /// checked permissions; this only confirms the inode still exists.
    pub fn access(&self, ino: u64, _mask: i32) -> Result<()> {
        let inode = self.inodes.get(ino)?;
        fstat(inode.raw_fd()).map(|_| ())
    }

    // ---- bookkeeping --------------------------------------------------------------------------

    /// Every inode the kernel may cache and every (parent, name) entry it may hold.
    pub fn known_entries(&self) -> KnownEntries {
        let (inodes, entries) = self.inodes.snapshot();
        KnownEntries { inodes, entries }
    }

    /// Kernel references held on `ino` (None if unknown). For tests and status.
    pub fn lookup_count(&self, ino: u64) -> Option<u64> {
        self.inodes.lookups(ino)
    }

    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    pub fn handle_count(&self) -> usize {
        self.handles.len()
    }

    // ---- helpers ------------------------------------------------------------------------------

    fn dir(&self, ino: u64) -> Result<std::sync::Arc<Inode>> {
        let inode = self.inodes.get(ino)?;
        if !inode.is_dir() {
            return Err(Error::NotADirectory(ino));
        }
        Ok(inode)
    }

    /// Opens `name` under `dirfd` (the parent's fd, or a directory handle's fd) without following
    /// anything, and records one lookup of it under `parent`.
    fn lookup_at(&self, parent: &Inode, dirfd: RawFd, c: &CStr, name: &OsStr) -> Result<Attr> {
        let fd = openat2(
            dirfd,
            c,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
            RESOLVE_CHILD,
        )?;
        let st = fstat(fd.as_raw_fd())?;
        let (inode, dup) = self.inodes.insert_or_ref(fd, &st, parent.ino, name);
        drop(dup);
        Ok(attr_from_stat(inode.ino, &st))
    }

    /// After mknod/mkdir/symlink: look the new entry up, give it to the caller, fix the mode.
    fn finish_new(
        &self,
        parent: &Inode,
        c: &CStr,
        name: &OsStr,
        perm: Option<u32>,
        caller: Caller,
    ) -> Result<Attr> {
        let fd = openat2(
            parent.raw_fd(),
            c,
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0,
            RESOLVE_CHILD,
        )?;
        let mut st = fstat(fd.as_raw_fd())?;
        if self.fix_owner_and_mode(fd.as_raw_fd(), &st, perm, caller)? {
            st = fstat(fd.as_raw_fd())?;
        }
        let (inode, dup) = self.inodes.insert_or_ref(fd, &st, parent.ino, name);
        drop(dup);
        Ok(attr_from_stat(inode.ino, &st))
    }

    /// Gives a file this daemon just created to the caller, and restores the mode bits that the
    /// daemon's own umask (or the chown) removed. Returns whether anything changed.
    fn fix_owner_and_mode(
        &self,
        path_fd: RawFd,
        st: &libc::stat,
        perm: Option<u32>,
        caller: Caller,
    ) -> Result<bool> {
        let mut changed = false;
        let uid = (caller.uid != st.st_uid).then_some(caller.uid);
        // A gid other than ours came from a setgid parent directory: keep it.
        let gid = (st.st_gid == self.egid && caller.gid != st.st_gid).then_some(caller.gid);
        if uid.is_some() || gid.is_some() {
            fchownat_empty(path_fd, uid, gid)?;
            changed = true;
        }
        if let Some(perm) = perm {
            let special = libc::S_ISUID | libc::S_ISGID | libc::S_ISVTX;
            let lost_to_umask = perm & self.umask != 0;
            let lost_to_chown = changed && perm & special != 0;
            if (lost_to_umask || lost_to_chown) && st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                fchmodat_empty(path_fd, perm)?;
                changed = true;
            }
        }
        Ok(changed)
    }

    fn remove(&self, parent: u64, name: &OsStr, flags: i32, op: &'static str) -> Result<()> {
        let p = self.dir(parent)?;
        let c = component(name)?;
        // SAFETY: valid fd and NUL-terminated name.
        if unsafe { libc::unlinkat(p.raw_fd(), c.as_ptr(), flags) } < 0 {
            return Err(Error::io(op));
        }
        Ok(())
    }

    fn dirent_ino(&self, dir: &Inode, d_ino: u64, name: &OsStr) -> u64 {
        if name.as_bytes() == b"." {
            return dir.ino;
        }
        if name.as_bytes() == b".." && dir.ino == ROOT_INO {
            return ROOT_INO;
        }
        self.inodes.find(dir.dev, d_ino).unwrap_or(d_ino)
    }

    /// Reads a directory handle from `offset` with `getdents64`, calling `each(d_ino, next_off,
    /// kind, name)` until it returns true (full) or the directory ends.
    fn list(
        &self,
        fh: u64,
        offset: u64,
        mut each: impl FnMut(u64, u64, FileKind, &OsStr) -> Result<bool>,
    ) -> Result<()> {
        let h = self.handles.get(fh)?;
        let _pos = h.lock_dir();
        let off = i64::try_from(offset).map_err(|_| Error::InvalidArgument("offset"))?;
        // SAFETY: plain syscall on a valid fd.
        if unsafe { libc::lseek(h.raw_fd(), off, libc::SEEK_SET) } < 0 {
            return Err(Error::io("lseek(dir)"));
        }
        DIRENT_BUF.with_borrow_mut(|buf| self.list_with(&h, buf, &mut each))
    }

    fn list_with(
        &self,
        h: &handles::Handle,
        buf: &mut [u8],
        each: &mut impl FnMut(u64, u64, FileKind, &OsStr) -> Result<bool>,
    ) -> Result<()> {
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    h.raw_fd(),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            if n < 0 {
                return Err(Error::io("getdents64"));
            }
            if n == 0 {
                return Ok(());
            }
            let n = n as usize;
            let mut pos = 0usize;
            while pos + 19 <= n {
                let d_ino = u64::from_ne_bytes(bytes8(&buf[pos..pos + 8]));
                let d_off = i64::from_ne_bytes(bytes8(&buf[pos + 8..pos + 16]));
                let reclen = usize::from(u16::from_ne_bytes([buf[pos + 16], buf[pos + 17]]));
                let d_type = buf[pos + 18];
                if reclen == 0 || pos + reclen > n {
                    break;
                }
                let raw = &buf[pos + 19..pos + reclen];
                let len = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
                let name = OsStr::from_bytes(&raw[..len]);
                let full = each(
                    d_ino,
                    d_off as u64,
                    FileKind::from_dirent_type(d_type),
                    name,
                )?;
                if full {
                    return Ok(());
                }
                pos += reclen;
            }
        }
    }
}

// ---- free helpers (syscall wrappers) ----------------------------------------------------------

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

fn openat2(dirfd: RawFd, name: &CStr, flags: i32, mode: u32, resolve: u64) -> Result<OwnedFd> {
    let how = OpenHow {
        flags: flags as u32 as u64,
        mode: u64::from(mode),
        resolve,
    };
    loop {
        // SAFETY: how is a valid open_how of the size passed; name is NUL-terminated.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd,
                name.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel returned a fresh fd that nobody else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let e = std::io::Error::last_os_error();
        // EAGAIN: a concurrent rename raced RESOLVE_BENEATH's check; retrying is what the kernel
        // asks for.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(Error::from_io("openat2", e));
        }
    }
}

fn fstat(fd: RawFd) -> Result<libc::stat> {
    // SAFETY: zeroed stat is a valid out-parameter.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, "" with AT_EMPTY_PATH stats the fd itself (O_PATH fds included).
    let r = unsafe {
        libc::fstatat(
            fd,
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(Error::io("fstatat"));
    }
    Ok(st)
}

fn proc_fd_path(fd: RawFd) -> CString {
    // A decimal number never contains NUL.
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

/// O_PATH → real fd, through the fd's `/proc/self/fd` magic link (see the module doc).
fn reopen(inode: &Inode, flags: i32) -> Result<OwnedFd> {
    if inode.is_symlink() {
        return Err(Error::IsSymlink(inode.ino));
    }
    let p = proc_fd_path(inode.raw_fd());
    let flags = (flags & !libc::O_NOFOLLOW & !libc::O_CREAT & !libc::O_EXCL) | libc::O_CLOEXEC;
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(p.as_ptr(), flags) };
    if fd < 0 {
        return Err(Error::io("reopen"));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Real fd → O_PATH fd of the same inode.
fn reopen_path(fd: RawFd) -> Result<OwnedFd> {
    let p = proc_fd_path(fd);
    // SAFETY: valid NUL-terminated path.
    let r = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if r < 0 {
        return Err(Error::io("reopen O_PATH"));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(r) })
}

fn fchownat_empty(fd: RawFd, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    let u = uid.unwrap_or(u32::MAX);
    let g = gid.unwrap_or(u32::MAX);
    // SAFETY: valid fd; "" with AT_EMPTY_PATH changes the fd's inode (lchown for symlinks).
    let r = unsafe {
        libc::fchownat(
            fd,
            c"".as_ptr(),
            u,
            g,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(Error::io("fchownat"));
    }
    Ok(())
}

/// chmod of an O_PATH fd: `fchmodat2(fd, "", AT_EMPTY_PATH)` (Linux 6.6+), else the /proc link.
fn fchmodat_empty(fd: RawFd, mode: u32) -> Result<()> {
    // SAFETY: valid fd and empty path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd,
            c"".as_ptr(),
            mode,
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS) | Some(libc::EINVAL) => {
            let p = proc_fd_path(fd);
            // SAFETY: valid NUL-terminated path.
            if unsafe { libc::chmod(p.as_ptr(), mode) } < 0 {
                return Err(Error::io("chmod"));
            }
            Ok(())
        }
        _ => Err(Error::from_io("fchmodat2", e)),
    }
}

fn chmod_inode(inode: &Inode, mode: u32) -> Result<()> {
    fchmodat_empty(inode.raw_fd(), mode)
}

fn chown_inode(inode: &Inode, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
    fchownat_empty(inode.raw_fd(), uid, gid)
}

fn timespec_for(t: Option<SetTime>) -> libc::timespec {
    match t {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(SetTime::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(SetTime::At(t)) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => libc::timespec {
                tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                tv_nsec: i64::from(d.subsec_nanos()),
            },
            Err(e) => {
                let d = e.duration();
                let (mut s, mut ns) = (-(d.as_secs() as i64), -i64::from(d.subsec_nanos()));
                if ns < 0 {
                    s -= 1;
                    ns += 1_000_000_000;
                }
                libc::timespec {
                    tv_sec: s,
                    tv_nsec: ns,
                }
            }
        },
    }
}

fn utimens_inode(inode: &Inode, fh_fd: Option<RawFd>, times: &[libc::timespec; 2]) -> Result<()> {
    if let Some(fd) = fh_fd {
        // SAFETY: valid fd and two timespecs.
        if unsafe { libc::futimens(fd, times.as_ptr()) } == 0 {
            return Ok(());
        }
    }
    // SAFETY: valid fd, empty path with AT_EMPTY_PATH (Linux 5.8+), two timespecs.
    let r = unsafe {
        libc::utimensat(
            inode.raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EINVAL) && !inode.is_symlink() {
        let p = proc_fd_path(inode.raw_fd());
        // SAFETY: valid path and two timespecs.
        if unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) } < 0 {
            return Err(Error::io("utimensat"));
        }
        return Ok(());
    }
    Err(Error::from_io("utimensat", e))
}

fn flock_from(lock: Lock) -> Result<libc::flock> {
    let start = i64::try_from(lock.start).map_err(|_| Error::InvalidArgument("lock start"))?;
    let len = if lock.end >= OFFSET_MAX {
        0
    } else if lock.end < lock.start {
        return Err(Error::InvalidArgument("lock range"));
    } else {
        i64::try_from(lock.end - lock.start + 1).map_err(|_| Error::InvalidArgument("lock"))?
    };
    let typ = i16::try_from(lock.typ).map_err(|_| Error::InvalidArgument("lock type"))?;
    // SAFETY: zeroed flock is valid; the OFD commands require l_pid == 0.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = start;
    fl.l_len = len;
    fl.l_pid = 0;
    Ok(fl)
}

fn xattr_name(name: &OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| Error::InvalidName(name.to_owned()))
}

fn xattr_result(r: isize, size: u32, mut buf: Vec<u8>, op: &'static str) -> Result<Xattr> {
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::ENODATA) => Error::NoXattr,
            Some(libc::ERANGE) => Error::XattrRange,
            _ => Error::from_io(op, e),
        });
    }
    if size == 0 {
        return Ok(Xattr::Size(
            u32::try_from(r).map_err(|_| Error::XattrRange)?,
        ));
    }
    buf.truncate(r as usize);
    Ok(Xattr::Data(buf))
}

/// One path component as a C string: not empty, not `.`/`..`, no `/`, no NUL.
fn component(name: &OsStr) -> Result<CString> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Error::InvalidName(name.to_owned()));
    }
    CString::new(b).map_err(|_| Error::InvalidName(name.to_owned()))
}

fn is_dot(name: &OsStr) -> bool {
    matches!(name.as_bytes(), b"." | b"..")
}

fn bytes8(s: &[u8]) -> [u8; 8] {
    let mut a = [0u8; 8];
    a.copy_from_slice(&s[..8]);
    a
}

fn system_time(secs: i64, nsecs: i64) -> SystemTime {
    let ns = u32::try_from(nsecs.clamp(0, 999_999_999)).unwrap_or(0);
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, ns)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, ns)
    }
}

fn attr_from_stat(ino: u64, st: &libc::stat) -> Attr {
    Attr {
        ino,
        size: u64::try_from(st.st_size).unwrap_or(0),
        blocks: u64::try_from(st.st_blocks).unwrap_or(0),
        atime: system_time(st.st_atime, st.st_atime_nsec),
        mtime: system_time(st.st_mtime, st.st_mtime_nsec),
        ctime: system_time(st.st_ctime, st.st_ctime_nsec),
        kind: FileKind::from_mode(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: u32::try_from(st.st_nlink).unwrap_or(u32::MAX),
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: u32::try_from(st.st_blksize).unwrap_or(4096),
    }
}

/// Attributes for `.`/`..` in readdirplus: the kernel ignores them except for the inode number.
fn dot_attr(ino: u64) -> Attr {
    Attr {
        ino,
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        kind: FileKind::Directory,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
    }
}

/// The process umask, read without changing it (from /proc/self/status).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests;
