//! The revocation hub: session id → the event streams open for it. A revoke call hands its event
//! to every subscriber before it returns; the store already made the change durable.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use grantfs::SessionId;
use grantfs::api::RevokedEvent;
use tokio::sync::oneshot;

const SHARDS: usize = 16;

type Subscribers = HashMap<String, Vec<(u64, oneshot::Sender<RevokedEvent>)>>;

#[derive(Default)]
pub struct Hub {
    shards: [Mutex<Subscribers>; SHARDS],
    next: AtomicU64,
    open: AtomicU64,
    delivered: AtomicU64,
}

/// An open subscription; dropping it unsubscribes.
pub struct Subscription {
    hub: Arc<Hub>,
    session: String,
    key: u64,
    rx: oneshot::Receiver<RevokedEvent>,
}

impl Subscription {
    /// Waits for the session's revocation; `None` if the hub is gone.
    pub async fn recv(&mut self) -> Option<RevokedEvent> {
        (&mut self.rx).await.ok()
    }
}

fn shard_of(id: &str) -> usize {
    // FNV-1a; ids are random, any spread works.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h % SHARDS as u64) as usize
}

impl Hub {
    fn shard(&self, id: &str) -> std::sync::MutexGuard<'_, Subscribers> {
        match self.shards[shard_of(id)].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn subscribe(self: &Arc<Self>, session: &SessionId) -> Subscription {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shard(session.as_str())
            .entry(session.as_str().to_owned())
            .or_default()
            .push((key, tx));
        self.open.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: self.clone(),
            session: session.as_str().to_owned(),
            key,
            rx,
        }
    }

    /// Hands `event` to every stream open for each session; returns how many received it.
    pub fn publish(&self, sessions: &[SessionId], event: RevokedEvent) -> usize {
        let mut n = 0;
        for s in sessions {
            let subs = self.shard(s.as_str()).remove(s.as_str());
            for (_, tx) in subs.into_iter().flatten() {
                if tx.send(event).is_ok() {
                    n += 1;
                }
            }
        }
        self.delivered.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Streams open right now.
    pub fn open_streams(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Sessions with at least one subscriber in the table (for leak checks: 0 once every
    /// subscription was dropped or published to).
    pub fn tracked_sessions(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut shard = self.hub.shard(&self.session);
        if let Some(v) = shard.get_mut(&self.session) {
            v.retain(|(k, _)| *k != self.key);
            if v.is_empty() {
                shard.remove(&self.session);
            }
        }
        drop(shard);
        self.hub.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use grantfs::Timestamp;
    use grantfs::api::RevokeReason;

    fn ev() -> RevokedEvent {
        RevokedEvent {
            reason: RevokeReason::GrantRevoked,
            at: Timestamp::now(),
        }
    }

    #[tokio::test]
    async fn every_subscriber_of_a_session_gets_the_event() {
        let hub = Arc::new(Hub::default());
        let s = SessionId::generate();
        let other = SessionId::generate();
        let mut a = hub.subscribe(&s);
        let mut b = hub.subscribe(&s);
        let c = hub.subscribe(&other);
        assert_eq!(hub.open_streams(), 3);
        assert_eq!(hub.publish(std::slice::from_ref(&s), ev()), 2);
        assert_eq!(a.recv().await.unwrap().reason, RevokeReason::GrantRevoked);
        assert!(b.recv().await.is_some());
        drop((a, b, c));
        assert_eq!(hub.open_streams(), 0);
    }

    #[test]
    fn dropped_subscription_receives_nothing_and_leaves_nothing() {
        let hub = Arc::new(Hub::default());
        let s = SessionId::generate();
        drop(hub.subscribe(&s));
        assert_eq!(hub.publish(std::slice::from_ref(&s), ev()), 0);
        assert!(hub.shard(s.as_str()).is_empty());
    }
}
