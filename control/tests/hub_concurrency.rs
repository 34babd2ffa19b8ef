//! Randomized concurrency tests of the revocation hub: real threads racing subscribe, publish and
//! drop with random pauses. Every subscriber alive when a publish for its session starts gets
//! exactly one event; once everything is dropped no entry is left and `open_streams()` is 0.
//! A failure prints the seed; `HUB_SEED=<seed>` replays it first, `HUB_ITERS=<n>` runs longer.
// clippy's allow-unwrap-in-tests covers #[test] fns only, not this test crate's helpers.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use futures_util::FutureExt;
use grantfs::api::{RevokeReason, RevokedEvent};
use grantfs::{SessionId, Timestamp};
use grantfs_control::hub::Hub;

/// xorshift64*: enough randomness for interleavings, reproducible from a printed seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pause(&mut self) {
        match self.below(4) {
            0 => {}
            1 => {
                for _ in 0..self.below(200) {
                    std::hint::spin_loop();
                }
            }
            _ => std::thread::yield_now(),
        }
    }
}

fn seeds(default_iters: u64) -> Vec<u64> {
    let iters = std::env::var("HUB_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_iters);
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut v: Vec<u64> = std::env::var("HUB_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .into_iter()
        .collect();
    v.extend((0..iters).map(|i| base.wrapping_add(i)));
    v
}

fn event(reason: RevokeReason) -> RevokedEvent {
    RevokedEvent {
        reason,
        at: Timestamp::now(),
    }
}

const NONE: u8 = 0;
const ALIVE: u8 = 1;
const DROPPED: u8 = 2;

/// One planned subscription: which session, and whether it is held until the publishers are
/// done (`keep`) or dropped at a random moment while they run.
#[derive(Clone, Copy)]
struct Plan {
    session: usize,
    keep: bool,
}

fn race_once(seed: u64) {
    let mut rng = Rng::new(seed);
    let hub = Arc::new(Hub::default());
    let sessions: Arc<Vec<SessionId>> = Arc::new(
        (0..1 + rng.below(4))
            .map(|_| SessionId::generate())
            .collect(),
    );
    let subscribers = 2 + rng.below(3) as usize;
    let per_thread = 1 + rng.below(6) as usize;
    let plans: Arc<Vec<Plan>> = Arc::new(
        (0..subscribers * per_thread)
            .map(|_| Plan {
                session: rng.below(sessions.len() as u64) as usize,
                keep: rng.below(3) != 0,
            })
            .collect(),
    );
    let slots: Arc<Vec<AtomicU8>> =
        Arc::new((0..plans.len()).map(|_| AtomicU8::new(NONE)).collect());
    // What each slot received: 0 or 1 events (a second would be a bug).
    let received: Arc<Vec<AtomicUsize>> =
        Arc::new((0..plans.len()).map(|_| AtomicUsize::new(0)).collect());
    // Keep-slots that were alive when a publish for their session started.
    let must_receive = Arc::new(Mutex::new(Vec::<usize>::new()));
    let publishers = 1 + rng.below(2) as usize;
    let start = Arc::new(Barrier::new(subscribers + publishers));
    let published = Arc::new(Barrier::new(subscribers + publishers));
    let delivered = Arc::new(AtomicUsize::new(0));

    let mut threads = Vec::new();
    for t in 0..subscribers {
        let (hub, sessions, plans, slots, received) = (
            hub.clone(),
            sessions.clone(),
            plans.clone(),
            slots.clone(),
            received.clone(),
        );
        let (start, published) = (start.clone(), published.clone());
        let mut rng = Rng::new(seed ^ ((t as u64 + 1) << 40));
        threads.push(std::thread::spawn(move || {
            start.wait();
            let mut held = Vec::new();
            for j in 0..per_thread {
                let slot = t * per_thread + j;
                let plan = plans[slot];
                rng.pause();
                let mut sub = hub.subscribe(&sessions[plan.session]);
                slots[slot].store(ALIVE, Ordering::SeqCst);
                if plan.keep {
                    held.push((slot, sub));
                } else {
                    rng.pause();
                    if let Some(Some(_)) = sub.recv().now_or_never() {
                        received[slot].fetch_add(1, Ordering::SeqCst);
                    }
                    slots[slot].store(DROPPED, Ordering::SeqCst);
                    drop(sub);
                }
            }
            published.wait();
            for (slot, sub) in &mut held {
                if let Some(Some(_)) = sub.recv().now_or_never() {
                    received[*slot].fetch_add(1, Ordering::SeqCst);
                }
            }
            held.len()
        }));
    }
    for p in 0..publishers {
        let (hub, sessions, plans, slots) =
            (hub.clone(), sessions.clone(), plans.clone(), slots.clone());
        let (start, published) = (start.clone(), published.clone());
        let (must_receive, delivered) = (must_receive.clone(), delivered.clone());
        let mut rng = Rng::new(seed ^ ((p as u64 + 1) << 20));
        threads.push(std::thread::spawn(move || {
            start.wait();
            for _ in 0..1 + rng.below(2) {
                rng.pause();
                let chosen: Vec<usize> =
                    (0..sessions.len()).filter(|_| rng.below(3) != 0).collect();
                let ids: Vec<SessionId> = chosen.iter().map(|&i| sessions[i].clone()).collect();
                // Snapshot before publishing: these were subscribed and will not be dropped.
                let alive: Vec<usize> = (0..plans.len())
                    .filter(|&s| {
                        plans[s].keep
                            && chosen.contains(&plans[s].session)
                            && slots[s].load(Ordering::SeqCst) == ALIVE
                    })
                    .collect();
                let n = hub.publish(&ids, event(RevokeReason::GrantRevoked));
                delivered.fetch_add(n, Ordering::SeqCst);
                must_receive.lock().unwrap().extend(alive);
            }
            published.wait();
            0
        }));
    }
    let held: usize = threads
        .into_iter()
        .map(|t| {
            t.join()
                .unwrap_or_else(|_| panic!("seed {seed}: a thread panicked"))
        })
        .sum();

    let got: Vec<usize> = received.iter().map(|r| r.load(Ordering::SeqCst)).collect();
    assert!(
        got.iter().all(|&g| g <= 1),
        "seed {seed}: a subscription got two events: {got:?}"
    );
    for &s in must_receive.lock().unwrap().iter() {
        assert_eq!(
            got[s], 1,
            "seed {seed}: live subscriber {s} missed its event"
        );
    }
    let total_got: usize = got.iter().sum();
    let dropped_early = plans.iter().filter(|p| !p.keep).count();
    let n = delivered.load(Ordering::SeqCst);
    // publish counts sends into live receivers; a drop-early subscriber may be sent to after its
    // last look and before its drop, so it may be counted without having looked.
    assert!(
        total_got <= n && n <= total_got + dropped_early,
        "seed {seed}: publish counted {n}, subscribers got {total_got}"
    );
    assert_eq!(hub.delivered(), n as u64, "seed {seed}");
    // The held subscriptions were dropped when their threads ended.
    assert_eq!(held, plans.iter().filter(|p| p.keep).count(), "seed {seed}");
    assert_eq!(hub.open_streams(), 0, "seed {seed}: streams left open");
    assert_eq!(hub.tracked_sessions(), 0, "seed {seed}: entries leaked");
    assert_eq!(
        hub.publish(&sessions, event(RevokeReason::Expired)),
        0,
        "seed {seed}: a dropped subscription still received"
    );
}

#[test]
fn racing_subscribe_publish_drop_delivers_exactly_once_and_leaks_nothing() {
    for seed in seeds(2000) {
        race_once(seed);
    }
}

#[test]
fn open_streams_counts_live_subscriptions_under_races() {
    for seed in seeds(200) {
        let hub = Arc::new(Hub::default());
        let ids: Vec<SessionId> = (0..3).map(|_| SessionId::generate()).collect();
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let (hub, ids, start) = (hub.clone(), ids.clone(), start.clone());
                let mut rng = Rng::new(seed ^ (t + 1));
                std::thread::spawn(move || {
                    start.wait();
                    let mut held = Vec::new();
                    for _ in 0..50 {
                        rng.pause();
                        match rng.below(4) {
                            0 | 1 => held.push(hub.subscribe(&ids[rng.below(3) as usize])),
                            2 if !held.is_empty() => {
                                held.swap_remove(rng.below(held.len() as u64) as usize);
                            }
                            _ => {
                                hub.publish(
                                    &ids[..1 + rng.below(3) as usize],
                                    event(RevokeReason::SessionRevoked),
                                );
                            }
                        }
                        // This thread's own live subscriptions are a floor of the count.
                        assert!(hub.open_streams() >= held.len() as u64, "seed {seed}");
                    }
                    held
                })
            })
            .collect();
        let held: Vec<_> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|_| panic!("seed {seed}: panicked")))
            .collect();
        assert_eq!(hub.open_streams(), held.len() as u64, "seed {seed}");
        drop(held);
        assert_eq!(hub.open_streams(), 0, "seed {seed}");
        assert_eq!(hub.tracked_sessions(), 0, "seed {seed}: entries leaked");
    }
}

#[test]
fn awaiting_subscribers_all_wake_on_publish() {
    // Tasks parked in `recv().await` on a multi-threaded runtime, then one publish from another
    // thread: every one of them wakes with the event, none times out.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    for seed in seeds(50) {
        let hub = Arc::new(Hub::default());
        let ids: Vec<SessionId> = (0..4).map(|_| SessionId::generate()).collect();
        let ready = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let (hub, id, ready) = (hub.clone(), ids[i % 4].clone(), ready.clone());
                rt.spawn(async move {
                    let mut sub = hub.subscribe(&id);
                    ready.fetch_add(1, Ordering::SeqCst);
                    tokio::time::timeout(Duration::from_secs(10), sub.recv()).await
                })
            })
            .collect();
        let mut rng = Rng::new(seed);
        while ready.load(Ordering::SeqCst) < 40 {
            rng.pause();
        }
        let n = std::thread::scope(|s| {
            s.spawn(|| hub.publish(&ids, event(RevokeReason::TenantDeleted)))
                .join()
                .unwrap()
        });
        assert_eq!(n, 40, "seed {seed}");
        for t in tasks {
            let r = rt.block_on(t).unwrap();
            let ev = r
                .unwrap_or_else(|_| panic!("seed {seed}: a subscriber never woke"))
                .unwrap_or_else(|| panic!("seed {seed}: hub gone"));
            assert_eq!(ev.reason, RevokeReason::TenantDeleted);
        }
        assert_eq!(hub.open_streams(), 0, "seed {seed}");
        assert_eq!(hub.tracked_sessions(), 0, "seed {seed}");
    }
}
