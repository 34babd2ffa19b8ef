//! The session gate: one atomic state per mount that every FUSE operation asks first; who flips it
//! (listener, expiry timer, offline watchdog) and what the kernel caches do about it live elsewhere.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use grantfs::Mode;

/// Why a gate was revoked: the API's `revoked` reasons, plus `Ended` for a local end (unmount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RevokeReason {
    GrantRevoked,
    TenantDeleted,
    WorkspaceDeleted,
    SessionRevoked,
    Expired,
    Ended,
}

impl RevokeReason {
    const ALL: [RevokeReason; 6] = [
        RevokeReason::GrantRevoked,
        RevokeReason::TenantDeleted,
        RevokeReason::WorkspaceDeleted,
        RevokeReason::SessionRevoked,
        RevokeReason::Expired,
        RevokeReason::Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::GrantRevoked => "grant_revoked",
            RevokeReason::TenantDeleted => "tenant_deleted",
            RevokeReason::WorkspaceDeleted => "workspace_deleted",
            RevokeReason::SessionRevoked => "session_revoked",
            RevokeReason::Expired => "expired",
            RevokeReason::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }

    fn code(self) -> u8 {
        match self {
            RevokeReason::GrantRevoked => 0,
            RevokeReason::TenantDeleted => 1,
            RevokeReason::WorkspaceDeleted => 2,
            RevokeReason::SessionRevoked => 3,
            RevokeReason::Expired => 4,
            RevokeReason::Ended => 5,
        }
    }
}

impl From<grantfs::api::RevokeReason> for RevokeReason {
    fn from(r: grantfs::api::RevokeReason) -> Self {
        match r {
            grantfs::api::RevokeReason::GrantRevoked => RevokeReason::GrantRevoked,
            grantfs::api::RevokeReason::TenantDeleted => RevokeReason::TenantDeleted,
            grantfs::api::RevokeReason::WorkspaceDeleted => RevokeReason::WorkspaceDeleted,
            grantfs::api::RevokeReason::SessionRevoked => RevokeReason::SessionRevoked,
            grantfs::api::RevokeReason::Expired => RevokeReason::Expired,
        }
    }
}

impl std::fmt::Display for RevokeReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the gate says right now. `Revoked` and `Expired` are terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GateState {
    Active,
    Offline,
    Expired,
    Revoked(RevokeReason),
}

impl GateState {
    pub fn is_open(self) -> bool {
        self == GateState::Active
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, GateState::Expired | GateState::Revoked(_))
    }

    /// `active`, `offline`, `expired` or `revoked:<reason>`, for status output.
    pub fn as_string(self) -> String {
        match self {
            GateState::Active => "active".to_owned(),
            GateState::Offline => "offline".to_owned(),
            GateState::Expired => "expired".to_owned(),
            GateState::Revoked(r) => format!("revoked:{}", r.as_str()),
        }
    }

    fn encode(self) -> u8 {
        match self {
            GateState::Active => ACTIVE,
            GateState::Offline => OFFLINE,
            GateState::Expired => EXPIRED,
            GateState::Revoked(r) => REVOKED_BASE + r.code(),
        }
    }

    fn decode(v: u8) -> GateState {
        match v {
            ACTIVE => GateState::Active,
            OFFLINE => GateState::Offline,
            EXPIRED => GateState::Expired,
            other => {
                let code = other.wrapping_sub(REVOKED_BASE);
                let reason = RevokeReason::ALL
                    .into_iter()
                    .find(|r| r.code() == code)
                    // Only `encode` writes the atomic, so this fallback is unreachable in practice;
                    // it still fails closed.
                    .unwrap_or(RevokeReason::SessionRevoked);
                GateState::Revoked(reason)
            }
        }
    }
}

const ACTIVE: u8 = 0;
const OFFLINE: u8 = 1;
const EXPIRED: u8 = 2;
const REVOKED_BASE: u8 = 16;

/// Why the gate refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GateError {
    /// The session no longer authorizes (revoked, expired or offline): `EACCES`.
    #[error("session gate is closed")]
    Closed,
    /// The session is `ro` and the operation would change the workspace: `EROFS`.
    #[error("session is read-only")]
    ReadOnly,
}

/// One per mount. Cheap to check (one atomic load), rare to flip.
pub struct SessionGate {
    state: AtomicU8,
    mode: Mode,
    expires_at_ms: i64,
    /// Bumped on every transition; waiters block on the condvar (never touched by `check`).
    epoch: Mutex<u64>,
    changed: Condvar,
    watch: tokio::sync::watch::Sender<GateState>,
}

impl std::fmt::Debug for SessionGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionGate")
            .field("state", &self.state())
            .field("mode", &self.mode)
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

impl SessionGate {
    pub fn new(mode: Mode, expires_at_unix_ms: i64) -> Arc<SessionGate> {
        let (watch, _) = tokio::sync::watch::channel(GateState::Active);
        Arc::new(SessionGate {
            state: AtomicU8::new(ACTIVE),
            mode,
            expires_at_ms: expires_at_unix_ms,
            epoch: Mutex::new(0),
            changed: Condvar::new(),
            watch,
        })
    }

    /// Hot path: one atomic load and one comparison.
    #[inline]
    pub fn check(&self) -> Result<(), GateError> {
        if self.state.load(Ordering::Acquire) == ACTIVE {
            Ok(())
        } else {
            Err(GateError::Closed)
        }
    }

    /// `check`, then `ReadOnly` for an `ro` session.
    #[inline]
    pub fn check_write(&self) -> Result<(), GateError> {
        self.check()?;
        match self.mode {
            Mode::Rw => Ok(()),
            Mode::Ro => Err(GateError::ReadOnly),
        }
    }

    pub fn state(&self) -> GateState {
        GateState::decode(self.state.load(Ordering::Acquire))
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn expires_at_ms(&self) -> i64 {
        self.expires_at_ms
    }

    /// Time left until `expires_at` (zero when past).
    pub fn time_to_expiry(&self) -> Duration {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let left = self.expires_at_ms.saturating_sub(now_ms);
        Duration::from_millis(u64::try_from(left).unwrap_or(0))
    }

    /// Closes the gate for good. True if this call closed an open (`Active`) gate; a gate that
    /// was `Offline` becomes `Revoked` too, but the call returns false (it was already closed).
    pub fn revoke(&self, reason: RevokeReason) -> bool {
        self.close_terminal(GateState::Revoked(reason))
    }

    /// Closes the gate for good because `expires_at` passed. Same return rule as `revoke`.
    pub fn expire(&self) -> bool {
        self.close_terminal(GateState::Expired)
    }

    /// `Active` → `Offline`. True if this call closed the gate.
    pub fn set_offline(&self) -> bool {
        self.transition(ACTIVE, OFFLINE)
    }

    /// `Offline` → `Active` only; nothing reopens a revoked or expired gate.
    pub fn set_online(&self) -> bool {
        self.transition(OFFLINE, ACTIVE)
    }

    /// A watch of the state, for async waiters (the listener, status output).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<GateState> {
        self.watch.subscribe()
    }

    /// The transition counter; pass it to `wait_for_change`.
    pub fn epoch(&self) -> u64 {
        *self.epoch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Blocks until the epoch differs from `seen` or `timeout` passes; returns the current epoch.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) -> u64 {
        let guard = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |e| *e == seen)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }

    /// Resolves once the gate is not `Active` (at once if it already is not).
    pub async fn closed(&self) -> GateState {
        let mut rx = self.watch.subscribe();
        loop {
            let s = self.state();
            if !s.is_open() {
                return s;
            }
            if rx.changed().await.is_err() {
                return self.state();
            }
        }
    }

    /// Sleeps until `expires_at`, then expires the gate. Returns whether it closed an open gate.
    pub async fn run_expiry(self: Arc<Self>) -> bool {
        loop {
            if self.state().is_terminal() {
                return false;
            }
            let left = self.time_to_expiry();
            if left.is_zero() {
                return self.expire();
            }
            tokio::time::sleep(left).await;
        }
    }

    fn close_terminal(&self, to: GateState) -> bool {
        let new = to.encode();
        let mut cur = self.state.load(Ordering::Acquire);
        loop {
            if GateState::decode(cur).is_terminal() {
                return false;
            }
            match self
                .state
                .compare_exchange(cur, new, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(prev) => {
                    self.notify(to);
                    return prev == ACTIVE;
                }
                Err(actual) => cur = actual,
            }
        }
    }

    fn transition(&self, from: u8, to: u8) -> bool {
        let ok = self
            .state
            .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if ok {
            self.notify(GateState::decode(to));
        }
        ok
    }

    fn notify(&self, s: GateState) {
        {
            let mut e = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
            *e = e.wrapping_add(1);
        }
        self.changed.notify_all();
        // Racing transitions reach this point in any order, so publish the state as it is now,
        // read under the watch's lock, rather than `s`: the last value sent is then always the
        // gate's latest state, and a terminal state is never followed by an older open or
        // offline one (tests/gate_concurrency.rs).
        self.watch.send_if_modified(|v| {
            let now = self.state();
            let changed = *v != now;
            *v = now;
            changed
        });
        tracing::info!(state = %s.as_string(), "session gate changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn gate(mode: Mode) -> Arc<SessionGate> {
        SessionGate::new(mode, i64::MAX)
    }

    #[test]
    fn new_gate_is_active_and_serves() {
        let g = gate(Mode::Rw);
        assert_eq!(g.state(), GateState::Active);
        assert_eq!(g.check(), Ok(()));
        assert_eq!(g.check_write(), Ok(()));
    }

    #[test]
    fn ro_gate_refuses_writes_with_read_only() {
        let g = gate(Mode::Ro);
        assert_eq!(g.check(), Ok(()));
        assert_eq!(g.check_write(), Err(GateError::ReadOnly));
        g.revoke(RevokeReason::GrantRevoked);
        assert_eq!(g.check_write(), Err(GateError::Closed));
    }

    #[test]
    fn revoke_closes_and_is_terminal() {
        let g = gate(Mode::Rw);
        assert!(g.revoke(RevokeReason::TenantDeleted));
        assert_eq!(g.state(), GateState::Revoked(RevokeReason::TenantDeleted));
        assert_eq!(g.check(), Err(GateError::Closed));
        assert!(!g.revoke(RevokeReason::GrantRevoked), "second revoke");
        assert!(!g.set_online());
        assert!(!g.set_offline());
        assert!(!g.expire());
        assert_eq!(
            g.state(),
            GateState::Revoked(RevokeReason::TenantDeleted),
            "first reason sticks"
        );
    }

    #[test]
    fn expire_closes_and_is_terminal() {
        let g = gate(Mode::Rw);
        assert!(g.expire());
        assert_eq!(g.state(), GateState::Expired);
        assert_eq!(g.check(), Err(GateError::Closed));
        assert!(!g.set_online());
        assert!(!g.revoke(RevokeReason::SessionRevoked));
        assert_eq!(g.state(), GateState::Expired);
    }

    #[test]
    fn offline_closes_and_online_reopens() {
        let g = gate(Mode::Rw);
        assert!(!g.set_online(), "active gate is not offline");
        assert!(g.set_offline());
        assert!(!g.set_offline(), "already offline");
        assert_eq!(g.check(), Err(GateError::Closed));
        assert!(g.set_online());
        assert_eq!(g.check(), Ok(()));
    }

    #[test]
    fn revoke_while_offline_is_terminal_but_reports_already_closed() {
        let g = gate(Mode::Rw);
        assert!(g.set_offline());
        assert!(!g.revoke(RevokeReason::WorkspaceDeleted));
        assert_eq!(
            g.state(),
            GateState::Revoked(RevokeReason::WorkspaceDeleted)
        );
        assert!(!g.set_online());
        assert_eq!(g.check(), Err(GateError::Closed));
    }

    #[test]
    fn expire_while_offline_is_terminal() {
        let g = gate(Mode::Rw);
        g.set_offline();
        assert!(!g.expire());
        assert_eq!(g.state(), GateState::Expired);
        assert!(!g.set_online());
    }

    #[test]
    fn reasons_round_trip() {
        for r in RevokeReason::ALL {
            assert_eq!(RevokeReason::parse(r.as_str()), Some(r));
            let s = GateState::Revoked(r);
            assert_eq!(GateState::decode(s.encode()), s);
        }
        assert_eq!(RevokeReason::parse("nope"), None);
        assert_eq!(
            RevokeReason::from(grantfs::api::RevokeReason::Expired),
            RevokeReason::Expired
        );
    }

    #[test]
    fn epoch_wakes_waiters() {
        let g = gate(Mode::Rw);
        let seen = g.epoch();
        let g2 = g.clone();
        let t = std::thread::spawn(move || g2.wait_for_change(seen, Duration::from_secs(10)));
        g.revoke(RevokeReason::SessionRevoked);
        let after = t.join().expect("waiter thread");
        assert_ne!(after, seen);
        assert_eq!(
            g.wait_for_change(after, Duration::from_millis(1)),
            after,
            "no change times out"
        );
    }

    #[test]
    fn past_expiry_expires_at_once() {
        let g = SessionGate::new(Mode::Rw, 0);
        assert!(g.time_to_expiry().is_zero());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        assert!(rt.block_on(g.clone().run_expiry()));
        assert_eq!(g.state(), GateState::Expired);
        assert_eq!(rt.block_on(g.closed()), GateState::Expired);
    }

    #[test]
    fn many_checkers_see_a_revoke_and_never_reopen() {
        let g = gate(Mode::Rw);
        let revoked = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for _ in 0..8 {
            let g = g.clone();
            let revoked = revoked.clone();
            threads.push(std::thread::spawn(move || {
                let mut served = 0u64;
                loop {
                    let seen_revoked = revoked.load(Ordering::Acquire);
                    match g.check() {
                        Ok(()) => {
                            assert!(!seen_revoked, "served after revoke returned");
                            served += 1;
                        }
                        Err(e) => {
                            assert_eq!(e, GateError::Closed);
                            // Once closed, stays closed.
                            for _ in 0..1000 {
                                assert_eq!(g.check(), Err(GateError::Closed));
                            }
                            return served;
                        }
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(20));
        assert!(g.revoke(RevokeReason::GrantRevoked));
        revoked.store(true, Ordering::Release);
        for t in threads {
            t.join().expect("checker thread");
        }
    }
}
