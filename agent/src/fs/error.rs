//! The filesystem's one error type and its one errno map; callers never pick an errno themselves.

use std::io;

use crate::session_gate::GateError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A syscall on the backing tree failed; its errno is passed through.
    #[error("{op} failed: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel named an inode this filesystem does not (or no longer) know.
    #[error("unknown inode {0}")]
    UnknownInode(u64),
    /// The kernel named a file handle this filesystem does not (or no longer) know.
    #[error("unknown file handle {0}")]
    UnknownHandle(u64),
    /// A name that is not one path component (empty, `.`, `..`, or containing `/` or NUL).
    #[error("invalid file name {0:?}")]
    InvalidName(std::ffi::OsString),
    /// Device nodes cannot be created in a workspace.
    #[error("device nodes are not allowed")]
    DeviceNode,
    /// An argument the filesystem refuses (unknown file type, rename flag, negative offset).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The operation needs a directory and got something else.
    #[error("inode {0} is not a directory")]
    NotADirectory(u64),
    /// Opening a symlink itself, which a passthrough never does.
    #[error("inode {0} is a symlink")]
    IsSymlink(u64),
    /// No such extended attribute.
    #[error("no such extended attribute")]
    NoXattr,
    /// The extended attribute value or list does not fit the caller's buffer.
    #[error("extended attribute buffer too small")]
    XattrRange,
    /// Extended attributes on symlinks are not supported.
    #[error("extended attributes on symlinks are not supported")]
    XattrOnSymlink,
    /// The session gate refused the operation.
    #[error(transparent)]
    Gate(#[from] GateError),
}

impl Error {
    pub(crate) fn io(op: &'static str) -> Error {
        Error::Io {
            op,
            source: io::Error::last_os_error(),
        }
    }

    pub(crate) fn from_io(op: &'static str, source: io::Error) -> Error {
        Error::Io { op, source }
    }

    /// The errno the kernel gets. The only place errors become errnos.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(0) | None => libc::EIO,
                Some(e) => e,
            },
            Error::UnknownInode(_) => libc::ESTALE,
            Error::UnknownHandle(_) => libc::EBADF,
            Error::InvalidName(_) => libc::EINVAL,
            Error::DeviceNode => libc::EPERM,
            Error::InvalidArgument(_) => libc::EINVAL,
            Error::NotADirectory(_) => libc::ENOTDIR,
            Error::IsSymlink(_) => libc::ELOOP,
            Error::NoXattr => libc::ENODATA,
            Error::XattrRange => libc::ERANGE,
            Error::XattrOnSymlink => libc::EPERM,
            Error::Gate(GateError::Closed) => libc::EACCES,
            Error::Gate(GateError::ReadOnly) => libc::EROFS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_errors_map_to_eacces_and_erofs() {
        assert_eq!(Error::from(GateError::Closed).errno(), libc::EACCES);
        assert_eq!(Error::from(GateError::ReadOnly).errno(), libc::EROFS);
    }

    #[test]
    fn io_errno_passes_through_and_unknown_is_eio() {
        let e = Error::from_io("x", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno(), libc::ENOSPC);
        let e = Error::from_io("x", io::Error::other("no errno"));
        assert_eq!(e.errno(), libc::EIO);
        assert_eq!(Error::DeviceNode.errno(), libc::EPERM);
    }
}
