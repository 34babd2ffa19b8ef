//! The fuser `Filesystem` impl: for every operation ask the gate, call `fs`, translate the reply.
//! No filesystem logic here; release/releasedir/forget/flush/destroy are served whatever the gate.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLock, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow,
    WriteFlags,
};

use crate::fs::{self, Attr, Caller, Error, FileKind, Fs, SetAttr, SetTime, Xattr};
use crate::session_gate::SessionGate;

/// Kernel-facing knobs of the FUSE session.
#[derive(Debug, Clone, Copy)]
pub struct FuseConfig {
    pub attr_ttl: Duration,
    pub entry_ttl: Duration,
    pub max_write: u32,
    pub max_readahead: u32,
    /// `FUSE_AUTO_INVAL_DATA`: drop a file's cached pages whenever a refreshed mtime differs.
    /// Only needed when something besides this mount changes the backing files: our own writes
    /// change the mtime too, so with it every file written through the mount loses its cache.
    pub auto_inval_data: bool,
    /// Ask the kernel to send POSIX locks here (taken as OFD locks on the backing file) instead
    /// of handling them locally. Blocking lock waits then occupy a worker thread.
    pub backing_locks: bool,
}

impl Default for FuseConfig {
    fn default() -> Self {
        FuseConfig {
            attr_ttl: crate::mount::DEFAULT_TTL,
            entry_ttl: crate::mount::DEFAULT_TTL,
            max_write: 1024 * 1024,
            max_readahead: 1024 * 1024,
            auto_inval_data: false,
            backing_locks: false,
        }
    }
}

thread_local! {
    /// One read buffer per FUSE worker thread, grown to the largest read seen (`max_read`, 1 MiB):
    /// a read neither allocates nor zeroes.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

pub struct GrantFs {
    fs: Arc<Fs>,
    #[cfg_attr(feature = "bench-no-gate", allow(dead_code))]
    gate: Arc<SessionGate>,
    cfg: FuseConfig,
}

impl GrantFs {
    pub fn new(fs: Arc<Fs>, gate: Arc<SessionGate>, cfg: FuseConfig) -> GrantFs {
        GrantFs { fs, gate, cfg }
    }

    #[cfg(not(feature = "bench-no-gate"))]
    #[inline]
    fn read_gate(&self) -> Result<(), Error> {
        self.gate.check().map_err(Error::from)
    }

    #[cfg(not(feature = "bench-no-gate"))]
    #[inline]
    fn write_gate(&self) -> Result<(), Error> {
        self.gate.check_write().map_err(Error::from)
    }

    /// Benchmark builds only (`--features bench-no-gate`): the gate check compiled out, to measure
    /// what enforcement costs. Never ship this: a revoked session keeps being served.
    #[cfg(feature = "bench-no-gate")]
    #[inline]
    fn read_gate(&self) -> Result<(), Error> {
        Ok(())
    }

    #[cfg(feature = "bench-no-gate")]
    #[inline]
    fn write_gate(&self) -> Result<(), Error> {
        Ok(())
    }

    /// `FOPEN_KEEP_CACHE`: pages survive reopening (the gate's `invalidate_all` drops them on
    /// close; a size change seen on attribute refresh, or `auto_inval_data`, drops them too). `FOPEN_NOFLUSH`: `close()`
    /// sends no FLUSH; writes reach the backing file synchronously (no writeback cache), so a
    /// flush has nothing to push, and `release` still closes the backing fd. With backing locks,
    /// flush stays on.
    fn file_open_flags(&self) -> FopenFlags {
        if self.cfg.backing_locks {
            FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_NOFLUSH
        }
    }

    fn entry(&self, reply: ReplyEntry, r: Result<Attr, Error>) {
        match r {
            Ok(a) => reply.entry_with_ttls(
                &self.cfg.attr_ttl,
                &self.cfg.entry_ttl,
                &file_attr(&a),
                Generation(0),
            ),
            Err(e) => reply.error(errno(&e, "entry")),
        }
    }
}

fn errno(e: &Error, op: &'static str) -> Errno {
    let n = e.errno();
    if n != libc::ENOENT && n != libc::EACCES && n != libc::ENODATA {
        tracing::debug!(op, error = %e, "fuse op failed");
    }
    Errno::from_i32(n)
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

fn kind(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: a.ctime,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

fn set_time(t: Option<TimeOrNow>) -> Option<SetTime> {
    t.map(|t| match t {
        TimeOrNow::Now => SetTime::Now,
        TimeOrNow::SpecificTime(s) => SetTime::At(s),
    })
}

fn is_write_open(flags: OpenFlags) -> bool {
    flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc::O_TRUNC != 0
}

fn xattr_reply(reply: ReplyXattr, r: Result<Xattr, Error>) {
    match r {
        Ok(Xattr::Size(n)) => reply.size(n),
        Ok(Xattr::Data(d)) => reply.data(&d),
        Err(e) => reply.error(errno(&e, "xattr")),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), Error>, op: &'static str) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e, op)),
    }
}

impl Filesystem for GrantFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let mut wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_ASYNC_DIO
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_MAX_PAGES;
        if self.cfg.backing_locks {
            wanted |= InitFlags::FUSE_POSIX_LOCKS;
        }
        if self.cfg.auto_inval_data {
            wanted |= InitFlags::FUSE_AUTO_INVAL_DATA;
        }
        for flag in wanted.iter() {
            if let Err(unsupported) = config.add_capabilities(flag) {
                tracing::debug!(?unsupported, "kernel lacks FUSE capability");
            }
        }
        if let Err(nearest) = config.set_max_write(self.cfg.max_write) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(self.cfg.max_readahead) {
            let _ = config.set_max_readahead(nearest);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn destroy(&mut self) {}

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self
            .read_gate()
            .and_then(|()| self.fs.lookup(parent.0, name));
        self.entry(reply, r);
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    // batch_forget: fuser 0.18 does not export `ForgetOne`, so the trait's default (one `forget`
    // per node) serves it.

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self
            .read_gate()
            .and_then(|()| self.fs.getattr(ino.0, fh.map(|f| f.0)))
        {
            Ok(a) => reply.attr(&self.cfg.attr_ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&e, "getattr")),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: set_time(atime),
            mtime: set_time(mtime),
            fh: fh.map(|f| f.0),
        };
        match self.write_gate().and_then(|()| self.fs.setattr(ino.0, set)) {
            Ok(a) => reply.attr(&self.cfg.attr_ttl, &file_attr(&a)),
            Err(e) => reply.error(errno(&e, "setattr")),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.read_gate().and_then(|()| self.fs.readlink(ino.0)) {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(errno(&e, "readlink")),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.mknod(parent.0, name, mode, rdev, caller(req)));
        self.entry(reply, r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.mkdir(parent.0, name, mode, caller(req)));
        self.entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.unlink(parent.0, name));
        empty(reply, r, "unlink");
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.rmdir(parent.0, name));
        empty(reply, r, "rmdir");
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.symlink(parent.0, link_name, target, caller(req)));
        self.entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.write_gate().and_then(|()| {
            self.fs
                .rename(parent.0, name, newparent.0, newname, flags.bits())
        });
        empty(reply, r, "rename");
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.link(ino.0, newparent.0, newname));
        self.entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let gate = if is_write_open(flags) {
            self.write_gate()
        } else {
            self.read_gate()
        };
        match gate.and_then(|()| self.fs.open(ino.0, flags.0)) {
            Ok(fh) => reply.opened(FileHandle(fh), self.file_open_flags()),
            Err(e) => reply.error(errno(&e, "open")),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        READ_BUF.with_borrow_mut(|buf| {
            let size = size as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            match self
                .read_gate()
                .and_then(|()| self.fs.read_into(fh.0, offset, &mut buf[..size]))
            {
                Ok(n) => reply.data(&buf[..n]),
                Err(e) => reply.error(errno(&e, "read")),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self
            .write_gate()
            .and_then(|()| self.fs.write(fh.0, offset, data))
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e, "write")),
        }
    }

    /// Part of `close()`: always served, so closing an fd never fails because of the gate.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.fs.flush(fh.0), "flush");
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self
            .read_gate()
            .and_then(|()| self.fs.fsync(fh.0, datasync));
        empty(reply, r, "fsync");
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.read_gate().and_then(|()| self.fs.opendir(ino.0)) {
            // The kernel keeps the listing across opens; any change through the mount, an mtime
            // change seen on the next attribute refresh, or the gate's `invalidate_all` drops it.
            Ok(fh) => reply.opened(
                FileHandle(fh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(errno(&e, "opendir")),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.read_gate().and_then(|()| {
            self.fs.readdir(ino.0, fh.0, offset, |e| {
                reply.add(INodeNo(e.ino), e.offset, kind(e.kind), e.name)
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "readdir")),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.cfg.entry_ttl.min(self.cfg.attr_ttl);
        let r = self.read_gate().and_then(|()| {
            self.fs.readdirplus(ino.0, fh.0, offset, |e, a| {
                reply.add(
                    INodeNo(e.ino),
                    e.offset,
                    e.name,
                    &ttl,
                    &file_attr(a),
                    Generation(0),
                )
            })
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e, "readdirplus")),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self
            .read_gate()
            .and_then(|()| self.fs.fsyncdir(fh.0, datasync));
        empty(reply, r, "fsyncdir");
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.read_gate().and_then(|()| self.fs.statfs(ino.0)) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(errno(&e, "statfs")),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.setxattr(ino.0, name, value, flags));
        empty(reply, r, "setxattr");
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let r = self
            .read_gate()
            .and_then(|()| self.fs.getxattr(ino.0, name, size));
        xattr_reply(reply, r);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let r = self
            .read_gate()
            .and_then(|()| self.fs.listxattr(ino.0, size));
        xattr_reply(reply, r);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.removexattr(ino.0, name));
        empty(reply, r, "removexattr");
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let gate = if mask.contains(AccessFlags::W_OK) {
            self.write_gate()
        } else {
            self.read_gate()
        };
        let r = gate.and_then(|()| self.fs.access(ino.0, mask.bits()));
        empty(reply, r, "access");
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self
            .write_gate()
            .and_then(|()| self.fs.create(parent.0, name, mode, flags, caller(req)))
        {
            Ok(c) => reply.created(
                &self.cfg.entry_ttl,
                &file_attr(&c.attr),
                Generation(0),
                FileHandle(c.fh),
                self.file_open_flags(),
            ),
            Err(e) => reply.error(errno(&e, "create")),
        }
    }

    fn getlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        let lock = fs::Lock {
            start,
            end,
            typ,
            pid,
        };
        match self.read_gate().and_then(|()| self.fs.getlk(fh.0, lock)) {
            Ok(l) => reply.locked(l.start, l.end, l.typ, l.pid),
            Err(e) => reply.error(errno(&e, "getlk")),
        }
    }

    fn setlk(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let lock = fs::Lock {
            start,
            end,
            typ,
            pid,
        };
        // Unlocking is always allowed (it only gives something up).
        let gate = if typ == i32::from(libc::F_UNLCK as i16) {
            Ok(())
        } else {
            self.read_gate()
        };
        let r = gate.and_then(|()| self.fs.setlk(fh.0, lock, sleep));
        empty(reply, r, "setlk");
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self
            .write_gate()
            .and_then(|()| self.fs.fallocate(fh.0, offset, length, mode));
        empty(reply, r, "fallocate");
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self
            .read_gate()
            .and_then(|()| self.fs.lseek(fh.0, offset, whence))
        {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(errno(&e, "lseek")),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let flags = u32::try_from(flags.bits()).unwrap_or(u32::MAX);
        match self.write_gate().and_then(|()| {
            self.fs
                .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len, flags)
        }) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(&e, "copy_file_range")),
        }
    }
}
