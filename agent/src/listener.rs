//! Who flips the gate from outside: the event-stream listener (reconnecting with backoff, the
//! session re-read on every reconnect through the stream's first `state` event), the local expiry
//! timer, and the offline watchdog. The gate itself and the cache invalidation live elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use grantfs::api::{RevokedEvent, Session, SessionState};
use grantfs::client::Client;
use grantfs::{ErrorCode, SessionId, Timestamp};

use crate::session_gate::{RevokeReason, SessionGate};

#[derive(Clone)]
pub struct ListenerConfig {
    pub client: Client,
    pub session_id: SessionId,
    pub token: String,
    /// No contact with the control plane for this long closes the gate until it answers again.
    pub offline_grace: Duration,
    /// The stream's keepalive period; a stream silent for three of them is reconnected.
    pub keepalive: Duration,
}

impl std::fmt::Debug for ListenerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerConfig")
            .field("session_id", &self.session_id)
            .field("offline_grace", &self.offline_grace)
            .finish_non_exhaustive()
    }
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies what a session read says to the gate. Returns true when the gate is closed for good.
fn apply_session(gate: &SessionGate, s: &Session) -> bool {
    match s.state {
        SessionState::Issued | SessionState::Active => {
            if gate.set_online() {
                tracing::info!(session = %s.id, "control plane confirmed the session; gate reopened");
            }
            false
        }
        SessionState::Expired => {
            gate.expire();
            true
        }
        SessionState::Revoked | SessionState::Ended => {
            let reason = s
                .end_reason
                .as_deref()
                .and_then(RevokeReason::parse)
                .unwrap_or(RevokeReason::SessionRevoked);
            gate.revoke(reason);
            true
        }
    }
}

fn apply_revoked(gate: &SessionGate, ev: RevokedEvent) {
    let reason: RevokeReason = ev.reason.into();
    let closed = if reason == RevokeReason::Expired {
        gate.expire()
    } else {
        gate.revoke(reason)
    };
    tracing::info!(reason = reason.as_str(), closed, "revocation received");
}

fn now_ms() -> i64 {
    Timestamp::now().millis()
}

/// Runs until the gate is closed for good (revoked or expired). Spawn it on a tokio runtime.
pub async fn run(cfg: ListenerConfig, gate: Arc<SessionGate>) {
    let last_contact = Arc::new(AtomicI64::new(now_ms()));
    let watchdog = tokio::spawn(offline_watchdog(
        gate.clone(),
        last_contact.clone(),
        cfg.offline_grace,
    ));
    let expiry = {
        let gate = gate.clone();
        tokio::spawn(async move {
            if gate.run_expiry().await {
                tracing::info!("session expired; gate closed");
            }
        })
    };
    listen(&cfg, &gate, &last_contact).await;
    watchdog.abort();
    expiry.abort();
}

async fn listen(cfg: &ListenerConfig, gate: &SessionGate, last_contact: &AtomicI64) {
    let mut backoff = BACKOFF_MIN;
    let stall = (cfg.keepalive * 3).max(Duration::from_secs(1));
    loop {
        if gate.state().is_terminal() {
            return;
        }
        let opened = tokio::time::timeout(
            CONNECT_TIMEOUT,
            cfg.client.events(&cfg.session_id, &cfg.token),
        )
        .await;
        let mut stream = match opened {
            Ok(Ok(s)) => Box::pin(s),
            Ok(Err(e)) => {
                match e.code() {
                    Some(ErrorCode::SessionExpired) => {
                        gate.expire();
                        return;
                    }
                    Some(ErrorCode::SessionRevoked) => {
                        gate.revoke(RevokeReason::SessionRevoked);
                        return;
                    }
                    Some(ErrorCode::Unauthorized) | Some(ErrorCode::SessionNotFound) => {
                        // The control plane no longer knows this session: fail closed for good.
                        tracing::warn!(error = %e, "control plane refused the session token");
                        gate.revoke(RevokeReason::SessionRevoked);
                        return;
                    }
                    _ => tracing::debug!(error = %e, "event stream unavailable"),
                }
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
            Err(_) => {
                tracing::debug!("event stream did not open in time");
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        loop {
            let next = tokio::time::timeout(stall, stream.next()).await;
            let ev = match next {
                Ok(Some(Ok(ev))) => ev,
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "event stream broke");
                    break;
                }
                Ok(None) => break,
                Err(_) => {
                    tracing::debug!("event stream silent past three keepalives; reconnecting");
                    break;
                }
            };
            last_contact.store(now_ms(), Ordering::Release);
            match ev.event.as_str() {
                "state" => {
                    backoff = BACKOFF_MIN;
                    match serde_json::from_str::<Session>(&ev.data) {
                        Ok(s) => {
                            if apply_session(gate, &s) {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "unreadable state event"),
                    }
                }
                "revoked" => {
                    match serde_json::from_str::<RevokedEvent>(&ev.data) {
                        Ok(r) => apply_revoked(gate, r),
                        // Fail closed on a revocation we cannot read.
                        Err(_) => {
                            gate.revoke(RevokeReason::SessionRevoked);
                        }
                    }
                    return;
                }
                _ => {}
            }
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Up to +25 % random-ish spread, so many agents do not reconnect in lockstep.
fn jitter(d: Duration) -> Duration {
    let spread = (now_ms().rem_euclid(251) as u32 * d.as_millis() as u32) / 1000;
    d + Duration::from_millis(u64::from(spread))
}

async fn offline_watchdog(gate: Arc<SessionGate>, last_contact: Arc<AtomicI64>, grace: Duration) {
    let tick = (grace / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    loop {
        tokio::time::sleep(tick).await;
        let silent = now_ms() - last_contact.load(Ordering::Acquire);
        if silent > grace.as_millis() as i64 && gate.set_offline() {
            tracing::warn!(
                silent_ms = silent,
                "no contact with the control plane past the offline grace; gate closed"
            );
        }
    }
}
