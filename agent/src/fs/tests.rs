//! Filesystem logic against a temp directory, without a kernel mount.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::*;

const ME: Caller = Caller { uid: 0, gid: 0 };

fn setup() -> (tempfile::TempDir, std::path::PathBuf, Fs) {
    let outer = tempfile::tempdir().expect("tempdir");
    let ws = outer.path().join("ws");
    std::fs::create_dir(&ws).expect("mkdir ws");
    std::fs::write(outer.path().join("secret"), b"outside").expect("write secret");
    let fs = Fs::new(&ws).expect("fs");
    (outer, ws, fs)
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn create_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> Attr {
    let c = fs
        .create(parent, os(name), 0o644, libc::O_RDWR, ME)
        .expect("create");
    assert_eq!(fs.write(c.fh, 0, data).expect("write"), data.len() as u32);
    fs.flush(c.fh).expect("flush");
    fs.release(c.fh);
    c.attr
}

fn names(fs: &Fs, ino: u64) -> Vec<String> {
    let fh = fs.opendir(ino).expect("opendir");
    let mut out = Vec::new();
    fs.readdir(ino, fh, 0, |e| {
        out.push(e.name.to_string_lossy().into_owned());
        false
    })
    .expect("readdir");
    fs.releasedir(fh);
    out.sort();
    out
}

#[test]
fn create_write_read_round_trip() {
    let (_t, ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "a.txt", b"hello world");
    assert_eq!(a.kind, FileKind::Regular);
    assert_eq!(
        std::fs::read(ws.join("a.txt")).expect("backing"),
        b"hello world"
    );

    let fh = fs.open(a.ino, libc::O_RDONLY).expect("open");
    assert_eq!(fs.read(fh, 6, 100).expect("read"), b"world");
    assert_eq!(fs.read(fh, 100, 10).expect("read past end"), b"");
    fs.release(fh);
    assert_eq!(fs.handle_count(), 0, "release closes handles");
    assert_eq!(fs.getattr(a.ino, None).expect("getattr").size, 11);
}

#[test]
fn create_exclusive_on_existing_file_fails_and_plain_create_opens_it() {
    let (_t, _ws, fs) = setup();
    create_file(&fs, ROOT_INO, "f", b"keep");
    let e = fs
        .create(ROOT_INO, os("f"), 0o600, libc::O_RDWR | libc::O_EXCL, ME)
        .expect_err("O_EXCL on existing");
    assert_eq!(e.errno(), libc::EEXIST);
    let c = fs
        .create(ROOT_INO, os("f"), 0o600, libc::O_RDWR, ME)
        .expect("create existing");
    assert_eq!(fs.read(c.fh, 0, 10).expect("read"), b"keep");
    assert_eq!(c.attr.perm, 0o644, "existing file keeps its mode");
    fs.release(c.fh);
}

#[test]
fn new_files_belong_to_the_caller_and_keep_their_full_mode() {
    let (_t, ws, fs) = setup();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: ownership test needs root");
        return;
    }
    let user = Caller {
        uid: 4242,
        gid: 4343,
    };
    let c = fs
        .create(ROOT_INO, os("mine"), 0o664, libc::O_WRONLY, user)
        .expect("create");
    fs.release(c.fh);
    assert_eq!((c.attr.uid, c.attr.gid), (4242, 4343));
    let d = fs.mkdir(ROOT_INO, os("d"), 0o777, user).expect("mkdir");
    assert_eq!((d.uid, d.gid, d.perm), (4242, 4343, 0o777));
    let md = std::fs::metadata(ws.join("d")).expect("stat");
    assert_eq!(md.permissions().mode() & 0o7777, 0o777);
    let l = fs
        .symlink(ROOT_INO, os("l"), Path::new("mine"), user)
        .expect("symlink");
    assert_eq!(l.uid, 4242);
}

#[test]
fn mkdir_readdir_and_readdirplus_list_entries() {
    let (_t, _ws, fs) = setup();
    let d = fs.mkdir(ROOT_INO, os("dir"), 0o755, ME).expect("mkdir");
    assert_eq!(d.kind, FileKind::Directory);
    create_file(&fs, d.ino, "x", b"1");
    create_file(&fs, d.ino, "y", b"2");
    assert_eq!(names(&fs, d.ino), vec![".", "..", "x", "y"]);

    let fh = fs.opendir(d.ino).expect("opendir");
    let mut seen = Vec::new();
    fs.readdirplus(d.ino, fh, 0, |e, a| {
        seen.push((e.name.to_string_lossy().into_owned(), a.kind));
        false
    })
    .expect("readdirplus");
    fs.releasedir(fh);
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[2], ("x".to_owned(), FileKind::Regular));
}

#[test]
fn readdir_continues_from_the_returned_offset() {
    let (_t, _ws, fs) = setup();
    for i in 0..50 {
        create_file(&fs, ROOT_INO, &format!("f{i:02}"), b"");
    }
    let fh = fs.opendir(ROOT_INO).expect("opendir");
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let mut batch = Vec::new();
        fs.readdir(ROOT_INO, fh, offset, |e| {
            if batch.len() == 7 {
                return true;
            }
            batch.push((e.name.to_string_lossy().into_owned(), e.offset));
            false
        })
        .expect("readdir");
        let Some(last) = batch.last() else { break };
        offset = last.1;
        all.extend(batch.into_iter().map(|b| b.0));
    }
    fs.releasedir(fh);
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 52, "every entry exactly once, plus . and ..");
}

#[test]
fn readdirplus_takes_back_the_lookup_of_an_entry_that_did_not_fit() {
    let (_t, _ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "only", b"");
    let before = fs.lookup_count(a.ino).expect("known");
    let fh = fs.opendir(ROOT_INO).expect("opendir");
    fs.readdirplus(ROOT_INO, fh, 0, |e, _| e.name == "only")
        .expect("readdirplus");
    fs.releasedir(fh);
    assert_eq!(fs.lookup_count(a.ino), Some(before));
}

#[test]
fn lookup_counts_and_forget_drop_inodes() {
    let (_t, _ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "f", b"");
    assert_eq!(fs.lookup_count(a.ino), Some(1));
    let b = fs.lookup(ROOT_INO, os("f")).expect("lookup");
    assert_eq!(a.ino, b.ino, "same backing file, same inode");
    assert_eq!(fs.lookup_count(a.ino), Some(2));
    fs.forget(a.ino, 1);
    assert_eq!(fs.lookup_count(a.ino), Some(1));
    fs.forget(a.ino, 1);
    assert_eq!(fs.lookup_count(a.ino), None);
    assert_eq!(
        fs.getattr(a.ino, None).expect_err("gone").errno(),
        libc::ESTALE
    );
    fs.forget(ROOT_INO, 100);
    assert!(fs.getattr(ROOT_INO, None).is_ok(), "root is pinned");
    let c = fs.lookup(ROOT_INO, os("f")).expect("lookup again");
    assert_ne!(c.ino, a.ino, "inode numbers are never reused");
}

#[test]
fn rename_with_and_without_flags() {
    let (_t, ws, fs) = setup();
    create_file(&fs, ROOT_INO, "a", b"A");
    create_file(&fs, ROOT_INO, "b", b"B");
    let e = fs
        .rename(ROOT_INO, os("a"), ROOT_INO, os("b"), libc::RENAME_NOREPLACE)
        .expect_err("noreplace");
    assert_eq!(e.errno(), libc::EEXIST);
    fs.rename(ROOT_INO, os("a"), ROOT_INO, os("b"), libc::RENAME_EXCHANGE)
        .expect("exchange");
    assert_eq!(std::fs::read(ws.join("a")).expect("a"), b"B");
    assert_eq!(std::fs::read(ws.join("b")).expect("b"), b"A");
    fs.rename(ROOT_INO, os("a"), ROOT_INO, os("c"), 0)
        .expect("rename");
    assert!(!ws.join("a").exists());
    assert_eq!(std::fs::read(ws.join("c")).expect("c"), b"B");
    let e = fs
        .rename(ROOT_INO, os("c"), ROOT_INO, os("d"), libc::RENAME_WHITEOUT)
        .expect_err("whiteout");
    assert_eq!(e.errno(), libc::EINVAL);
}

#[test]
fn unlink_and_rmdir() {
    let (_t, ws, fs) = setup();
    create_file(&fs, ROOT_INO, "f", b"");
    let d = fs.mkdir(ROOT_INO, os("d"), 0o755, ME).expect("mkdir");
    create_file(&fs, d.ino, "inner", b"");
    assert_eq!(
        fs.rmdir(ROOT_INO, os("d")).expect_err("not empty").errno(),
        libc::ENOTEMPTY
    );
    fs.unlink(d.ino, os("inner")).expect("unlink inner");
    fs.rmdir(ROOT_INO, os("d")).expect("rmdir");
    fs.unlink(ROOT_INO, os("f")).expect("unlink");
    assert_eq!(
        fs.unlink(ROOT_INO, os("f")).expect_err("again").errno(),
        libc::ENOENT
    );
    assert_eq!(std::fs::read_dir(&ws).expect("ls").count(), 0);
}

#[test]
fn hard_link_shares_the_inode() {
    let (_t, _ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "a", b"data");
    let l = fs.link(a.ino, ROOT_INO, os("b")).expect("link");
    assert_eq!(l.ino, a.ino);
    assert_eq!(l.nlink, 2);
}

#[test]
fn symlink_reads_back_but_is_never_opened_or_followed() {
    let (t, _ws, fs) = setup();
    let outside = t.path().join("secret");
    let abs = fs
        .symlink(ROOT_INO, os("abs"), &outside, ME)
        .expect("symlink abs");
    let rel = fs
        .symlink(ROOT_INO, os("rel"), Path::new("../secret"), ME)
        .expect("symlink rel");
    assert_eq!(abs.kind, FileKind::Symlink);
    assert_eq!(
        fs.readlink(abs.ino).expect("readlink"),
        outside.as_os_str().as_bytes()
    );
    assert_eq!(fs.readlink(rel.ino).expect("readlink"), b"../secret");
    for ino in [abs.ino, rel.ino] {
        assert_eq!(
            fs.open(ino, libc::O_RDONLY)
                .expect_err("open symlink")
                .errno(),
            libc::ELOOP
        );
    }
    assert_eq!(
        fs.lookup(ROOT_INO, os("abs")).expect("lookup").kind,
        FileKind::Symlink,
        "lookup returns the link itself"
    );
}

#[test]
fn a_symlinked_directory_pointing_outside_is_not_a_way_out() {
    let (t, _ws, fs) = setup();
    fs.symlink(ROOT_INO, os("up"), Path::new(".."), ME)
        .expect("symlink ..");
    fs.symlink(ROOT_INO, os("out"), t.path(), ME)
        .expect("symlink outer");
    for p in ["up/secret", "out/secret"] {
        let e = fs.lookup_path(Path::new(p)).expect_err(p);
        assert_eq!(e.errno(), libc::ENOTDIR, "{p}");
    }
    for p in ["../secret", "/etc/passwd"] {
        let e = fs.lookup_path(Path::new(p)).expect_err(p);
        assert_eq!(e.errno(), libc::EINVAL, "{p}");
    }
    // A directory handle of the symlink cannot be opened either.
    let up = fs.lookup(ROOT_INO, os("up")).expect("lookup");
    assert_eq!(
        fs.opendir(up.ino).expect_err("opendir").errno(),
        libc::ENOTDIR
    );
    // Names that are not one component are refused before any syscall.
    for n in ["..", ".", "a/b", ""] {
        assert_eq!(
            fs.lookup(ROOT_INO, os(n)).expect_err(n).errno(),
            libc::EINVAL,
            "{n:?}"
        );
    }
    // Creating through a symlink as the final component does not write outside.
    let e = fs
        .create(ROOT_INO, os("out"), 0o644, libc::O_RDWR, ME)
        .expect_err("create over symlink");
    assert_eq!(e.errno(), libc::ELOOP);
    assert_eq!(
        std::fs::read(t.path().join("secret")).expect("secret"),
        b"outside"
    );
}

#[test]
fn a_directory_moved_outside_is_not_reachable_by_name() {
    // RESOLVE_BENEATH: an inode fd of a directory renamed out of the root may still be held, but
    // children are only ever opened one component at a time with BENEATH|NO_SYMLINKS.
    let (t, ws, fs) = setup();
    let d = fs.mkdir(ROOT_INO, os("d"), 0o755, ME).expect("mkdir");
    std::fs::rename(ws.join("d"), t.path().join("moved")).expect("move out");
    std::fs::write(t.path().join("moved/x"), b"x").expect("write");
    // Still the same directory object; reading inside it is what a held inode allows (like an
    // open fd), but `..` from it stays refused.
    assert_eq!(
        fs.lookup(d.ino, os("..")).expect_err("..").errno(),
        libc::EINVAL
    );
}

#[test]
fn setattr_changes_mode_size_and_times() {
    let (_t, ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "f", b"0123456789");
    let r = fs
        .setattr(
            a.ino,
            SetAttr {
                mode: Some(0o600),
                size: Some(4),
                ..SetAttr::default()
            },
        )
        .expect("setattr");
    assert_eq!((r.perm, r.size), (0o600, 4));
    assert_eq!(std::fs::read(ws.join("f")).expect("read"), b"0123");

    let t = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let r = fs
        .setattr(
            a.ino,
            SetAttr {
                atime: Some(SetTime::At(t)),
                mtime: Some(SetTime::At(t)),
                ..SetAttr::default()
            },
        )
        .expect("utimens");
    assert_eq!((r.atime, r.mtime), (t, t));
    let r = fs
        .setattr(
            a.ino,
            SetAttr {
                mtime: Some(SetTime::Now),
                ..SetAttr::default()
            },
        )
        .expect("utime now");
    assert!(r.mtime > t);
    assert_eq!(r.atime, t, "omitted atime unchanged");
    let md = std::fs::metadata(ws.join("f")).expect("stat");
    assert_eq!(md.mode() & 0o7777, 0o600);

    // truncate through an open handle as well
    let fh = fs.open(a.ino, libc::O_RDWR).expect("open");
    let r = fs
        .setattr(
            a.ino,
            SetAttr {
                size: Some(0),
                fh: Some(fh),
                ..SetAttr::default()
            },
        )
        .expect("ftruncate");
    assert_eq!(r.size, 0);
    fs.release(fh);
}

#[test]
fn mknod_makes_fifos_but_refuses_devices() {
    let (_t, _ws, fs) = setup();
    let f = fs
        .mknod(ROOT_INO, os("fifo"), libc::S_IFIFO | 0o644, 0, ME)
        .expect("fifo");
    assert_eq!(f.kind, FileKind::Fifo);
    let r = fs
        .mknod(ROOT_INO, os("reg"), libc::S_IFREG | 0o644, 0, ME)
        .expect("regular");
    assert_eq!(r.kind, FileKind::Regular);
    for t in [libc::S_IFCHR, libc::S_IFBLK] {
        let e = fs
            .mknod(ROOT_INO, os("dev"), t | 0o644, 0x0103, ME)
            .expect_err("device");
        assert_eq!(e.errno(), libc::EPERM);
    }
}

#[test]
fn xattrs_round_trip() {
    let (_t, _ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "f", b"");
    match fs.setxattr(a.ino, os("user.grantfs"), b"v1", 0) {
        Ok(()) => {}
        Err(e) if e.errno() == libc::EOPNOTSUPP => {
            eprintln!("SKIP: backing fs has no user xattrs");
            return;
        }
        Err(e) => panic!("setxattr: {e}"),
    }
    assert_eq!(
        fs.getxattr(a.ino, os("user.grantfs"), 0).expect("size"),
        Xattr::Size(2)
    );
    assert_eq!(
        fs.getxattr(a.ino, os("user.grantfs"), 64).expect("get"),
        Xattr::Data(b"v1".to_vec())
    );
    assert_eq!(
        fs.getxattr(a.ino, os("user.grantfs"), 1)
            .expect_err("small")
            .errno(),
        libc::ERANGE
    );
    match fs.listxattr(a.ino, 256).expect("list") {
        Xattr::Data(d) => assert!(d.split(|b| *b == 0).any(|n| n == b"user.grantfs")),
        Xattr::Size(_) => panic!("asked for data"),
    }
    fs.removexattr(a.ino, os("user.grantfs")).expect("remove");
    assert_eq!(
        fs.getxattr(a.ino, os("user.grantfs"), 64)
            .expect_err("gone")
            .errno(),
        libc::ENODATA
    );
}

#[test]
fn fallocate_lseek_copy_file_range_and_fsync() {
    let (_t, ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "src", b"abcdef");
    let b = fs
        .create(ROOT_INO, os("dst"), 0o644, libc::O_RDWR, ME)
        .expect("create dst");
    let src = fs.open(a.ino, libc::O_RDONLY).expect("open src");
    assert_eq!(fs.copy_file_range(src, 1, b.fh, 0, 3, 0).expect("copy"), 3);
    fs.fsync(b.fh, false).expect("fsync");
    fs.fsync(b.fh, true).expect("fdatasync");
    assert_eq!(std::fs::read(ws.join("dst")).expect("dst"), b"bcd");
    fs.fallocate(b.fh, 0, 8192, 0).expect("fallocate");
    assert_eq!(fs.getattr(b.attr.ino, None).expect("attr").size, 8192);
    assert_eq!(fs.lseek(src, 0, libc::SEEK_END).expect("lseek"), 6);
    fs.release(src);
    fs.release(b.fh);
}

#[test]
fn locks_on_the_backing_file() {
    let (_t, _ws, fs) = setup();
    let a = create_file(&fs, ROOT_INO, "f", b"0123456789");
    let h1 = fs.open(a.ino, libc::O_RDWR).expect("open 1");
    let h2 = fs.open(a.ino, libc::O_RDWR).expect("open 2");
    let wr = Lock {
        start: 0,
        end: 4,
        typ: i32::from(libc::F_WRLCK as i16),
        pid: 0,
    };
    fs.setlk(h1, wr, false).expect("lock 1");
    let e = fs.setlk(h2, wr, false).expect_err("conflict");
    assert!(e.errno() == libc::EAGAIN || e.errno() == libc::EACCES);
    let seen = fs.getlk(h2, wr).expect("getlk");
    assert_eq!(seen.typ, i32::from(libc::F_WRLCK as i16));
    assert_eq!((seen.start, seen.end), (0, 4));
    fs.flock(h1, libc::LOCK_EX | libc::LOCK_NB).expect("flock");
    assert!(fs.flock(h2, libc::LOCK_EX | libc::LOCK_NB).is_err());
    fs.release(h1);
    fs.setlk(h2, wr, false).expect("lock after release");
    fs.release(h2);
}

#[test]
fn statfs_and_known_entries() {
    let (_t, _ws, fs) = setup();
    let s = fs.statfs(ROOT_INO).expect("statfs");
    assert!(s.bsize > 0);
    let a = create_file(&fs, ROOT_INO, "f", b"");
    let known = fs.known_entries();
    assert!(known.inodes.contains(&ROOT_INO));
    assert!(known.inodes.contains(&a.ino));
    assert!(known.entries.contains(&(ROOT_INO, "f".into())));
}

#[test]
fn unknown_inodes_and_handles_are_errors_not_panics() {
    let (_t, _ws, fs) = setup();
    assert_eq!(
        fs.getattr(999, None).expect_err("ino").errno(),
        libc::ESTALE
    );
    assert_eq!(fs.read(999, 0, 1).expect_err("fh").errno(), libc::EBADF);
    fs.release(999);
    fs.releasedir(999);
    fs.forget(999, 1);
}
