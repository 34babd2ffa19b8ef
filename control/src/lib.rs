//! grantfs-control: the control plane. Keeps workspaces, tenants, grants and sessions in a store,
//! signs mount tickets, and pushes every revocation to the event streams of the live mounts.

pub mod api;
pub mod config;
pub mod hub;
pub mod ratelimit;
pub mod server;
pub mod signing;
pub mod store;
