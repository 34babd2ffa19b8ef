//! grantfs-agent library: the session gate, the passthrough filesystem, its FUSE binding and
//! mounting. The binary (`main.rs`) only parses arguments and calls into here.

pub mod cli;
pub mod fs;
pub mod fuse;
pub mod listener;
pub mod mount;
pub mod registry;
pub mod run;
pub mod session_gate;
