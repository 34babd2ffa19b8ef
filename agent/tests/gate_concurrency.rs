//! Randomized concurrency tests of the real `SessionGate`: many iterations of real threads racing
//! revoke / expire / set_offline / set_online / check with random yields, each iteration checking
//! the gate's invariants. A failure prints the seed; `GATE_SEED=<seed>` replays that iteration first,
//! `GATE_ITERS=<n>` runs longer.
// clippy's allow-unwrap-in-tests covers #[test] fns only, not this test crate's helpers.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use grantfs_agent::session_gate::{GateError, GateState, Mode, RevokeReason, SessionGate};

/// xorshift64*: enough randomness for interleavings, reproducible from a printed seed.
#[derive(Clone)]
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
    /// A random pause: nothing, a spin, or a yield to the scheduler.
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

fn iterations(default: u64) -> u64 {
    std::env::var("GATE_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Seeds to run: `GATE_SEED` first when set, then a clock-derived base plus the iteration number.
fn seeds(default_iters: u64) -> Vec<u64> {
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let mut v: Vec<u64> = std::env::var("GATE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .into_iter()
        .collect();
    v.extend((0..iterations(default_iters)).map(|i| base.wrapping_add(i)));
    v
}

const REASONS: [RevokeReason; 6] = [
    RevokeReason::GrantRevoked,
    RevokeReason::TenantDeleted,
    RevokeReason::WorkspaceDeleted,
    RevokeReason::SessionRevoked,
    RevokeReason::Expired,
    RevokeReason::Ended,
];

/// What one racing thread saw and did.
#[derive(Default)]
struct Tally {
    offline_ok: usize,
    online_ok: usize,
    /// The terminal state a `revoke`/`expire` call returning true set.
    closed_open_gate: Vec<GateState>,
    terminal_calls: usize,
}

/// One iteration: `threads` threads start together and each runs `ops` random operations.
fn race_once(seed: u64, threads: usize, ops: usize) {
    let gate = SessionGate::new(Mode::Rw, i64::MAX);
    let seen_at_start = gate.epoch();
    let mut watch = gate.subscribe();
    // Set once some thread observed a terminal state, or a terminal call returned.
    let terminal_seen = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let gate = gate.clone();
            let terminal_seen = terminal_seen.clone();
            let start = start.clone();
            let mut rng = Rng::new(seed ^ ((t as u64 + 1) << 32));
            std::thread::spawn(move || {
                let mut tally = Tally::default();
                let mut my_terminal: Option<GateState> = None;
                start.wait();
                for _ in 0..ops {
                    rng.pause();
                    // Read the flag BEFORE acting: if it was set, the terminal transition
                    // happened-before this operation, which therefore must see it.
                    let after_terminal = terminal_seen.load(Ordering::Acquire);
                    match rng.below(100) {
                        // Revoke and expire are rare, so most iterations race the toggles
                        // before the gate closes for good.
                        0..=2 => {
                            let r = REASONS[rng.below(REASONS.len() as u64) as usize];
                            tally.terminal_calls += 1;
                            if gate.revoke(r) {
                                assert!(!after_terminal, "seed {seed}: revoke reopened+closed");
                                tally.closed_open_gate.push(GateState::Revoked(r));
                            }
                            terminal_seen.store(true, Ordering::Release);
                        }
                        3 => {
                            tally.terminal_calls += 1;
                            if gate.expire() {
                                assert!(!after_terminal, "seed {seed}: expire after terminal");
                                tally.closed_open_gate.push(GateState::Expired);
                            }
                            terminal_seen.store(true, Ordering::Release);
                        }
                        4..=25 => {
                            if gate.set_offline() {
                                assert!(!after_terminal, "seed {seed}: offline after terminal");
                                tally.offline_ok += 1;
                            }
                        }
                        26..=47 => {
                            if gate.set_online() {
                                assert!(!after_terminal, "seed {seed}: online after terminal");
                                tally.online_ok += 1;
                            }
                        }
                        48..=79 => {
                            let r = gate.check();
                            if after_terminal {
                                assert_eq!(r, Err(GateError::Closed), "seed {seed}: served");
                                assert_eq!(gate.check_write(), Err(GateError::Closed));
                            }
                        }
                        _ => {
                            let s = gate.state();
                            if let Some(t) = my_terminal {
                                assert_eq!(s, t, "seed {seed}: terminal state changed");
                            }
                            if after_terminal {
                                assert!(s.is_terminal(), "seed {seed}: {s:?} after terminal");
                            }
                            if s.is_terminal() {
                                my_terminal = Some(s);
                                terminal_seen.store(true, Ordering::Release);
                                assert_eq!(gate.check(), Err(GateError::Closed));
                            }
                        }
                    }
                }
                tally
            })
        })
        .collect();
    let tallies: Vec<Tally> = handles
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("seed {seed}: a racing thread panicked"))
        })
        .collect();

    let fin = gate.state();
    let offline_ok: usize = tallies.iter().map(|t| t.offline_ok).sum();
    let online_ok: usize = tallies.iter().map(|t| t.online_ok).sum();
    let terminal_calls: usize = tallies.iter().map(|t| t.terminal_calls).sum();
    let closers: Vec<GateState> = tallies
        .iter()
        .flat_map(|t| t.closed_open_gate.iter().copied())
        .collect();

    // At most one call ever closes an open gate for good, and its state sticks.
    assert!(closers.len() <= 1, "seed {seed}: {closers:?} all closed it");
    if let Some(c) = closers.first() {
        assert_eq!(
            fin, *c,
            "seed {seed}: the closing call's state did not stick"
        );
    }
    assert_eq!(
        fin.is_terminal(),
        terminal_calls > 0,
        "seed {seed}: final {fin:?} after {terminal_calls} terminal calls"
    );
    // Every successful toggle alternates Active → Offline → Active …
    assert!(
        offline_ok == online_ok || offline_ok == online_ok + 1,
        "seed {seed}: {offline_ok} offline vs {online_ok} online transitions"
    );
    match fin {
        GateState::Active => assert_eq!(offline_ok, online_ok, "seed {seed}"),
        GateState::Offline => assert_eq!(offline_ok, online_ok + 1, "seed {seed}"),
        _ => {}
    }
    assert_eq!(
        gate.check().is_ok(),
        fin == GateState::Active,
        "seed {seed}"
    );
    // One epoch bump per transition: the toggles and at most one terminal transition.
    let transitions = offline_ok + online_ok + usize::from(fin.is_terminal());
    assert_eq!(
        gate.epoch().wrapping_sub(seen_at_start),
        transitions as u64,
        "seed {seed}: epoch does not count the transitions"
    );
    // The watch channel ends on the gate's state.
    assert_eq!(
        *watch.borrow_and_update(),
        fin,
        "seed {seed}: watch channel disagrees with state()"
    );
    assert_eq!(*gate.subscribe().borrow(), fin, "seed {seed}");
}

#[test]
fn racing_transitions_keep_the_gate_invariants() {
    for (i, seed) in seeds(1500).into_iter().enumerate() {
        let threads = 2 + (i % 4);
        race_once(seed, threads, 60);
    }
}

#[test]
fn a_watch_never_shows_a_terminal_state_reopening() {
    // A receiver that follows every change must never see a non-terminal value after a terminal
    // one: status output and the foreground `--json` events read this channel.
    for seed in seeds(400) {
        let gate = SessionGate::new(Mode::Rw, i64::MAX);
        let mut rx = gate.subscribe();
        let stop = Arc::new(AtomicBool::new(false));
        let watcher = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut terminal: Option<GateState> = None;
                    loop {
                        let changed =
                            tokio::time::timeout(Duration::from_millis(20), rx.changed()).await;
                        let s = *rx.borrow_and_update();
                        if let Some(t) = terminal {
                            assert_eq!(s, t, "seed {seed}: watch left terminal {t:?} for {s:?}");
                        }
                        if s.is_terminal() {
                            terminal = Some(s);
                        }
                        if changed.is_err() && stop.load(Ordering::Acquire) {
                            return terminal;
                        }
                    }
                })
            })
        };
        let start = Arc::new(Barrier::new(3));
        let togglers: Vec<_> = (0..2u64)
            .map(|t| {
                let gate = gate.clone();
                let start = start.clone();
                let mut rng = Rng::new(seed ^ (t + 7));
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..40 {
                        rng.pause();
                        if rng.below(2) == 0 {
                            gate.set_offline();
                        } else {
                            gate.set_online();
                        }
                    }
                })
            })
            .collect();
        let mut rng = Rng::new(seed);
        start.wait();
        for _ in 0..rng.below(30) {
            rng.pause();
        }
        gate.revoke(RevokeReason::SessionRevoked);
        for t in togglers {
            t.join().unwrap();
        }
        stop.store(true, Ordering::Release);
        let last = watcher
            .join()
            .unwrap_or_else(|_| panic!("seed {seed}: watcher failed"));
        assert_eq!(
            last,
            Some(GateState::Revoked(RevokeReason::SessionRevoked)),
            "seed {seed}: watcher never saw the revocation"
        );
        assert_eq!(*gate.subscribe().borrow(), gate.state(), "seed {seed}");
    }
}

#[test]
fn waiters_always_wake_on_a_racing_transition() {
    // Condvar waiters (`wait_for_change`) and async waiters (`closed`) that start around the same
    // time as a revoke (or an offline flip) must all return, long before their timeout.
    const PATIENCE: Duration = Duration::from_secs(10);
    for seed in seeds(300) {
        let gate = SessionGate::new(Mode::Ro, i64::MAX);
        let mut rng = Rng::new(seed);
        let woke = Arc::new(AtomicUsize::new(0));
        let start = Arc::new(Barrier::new(5));
        let mut waiters = Vec::new();
        for w in 0..2u64 {
            let gate = gate.clone();
            let woke = woke.clone();
            let start = start.clone();
            let mut rng = Rng::new(seed ^ (w + 11));
            waiters.push(std::thread::spawn(move || {
                start.wait();
                rng.pause();
                let seen = gate.epoch();
                let t0 = Instant::now();
                // A transition before `epoch()` was read is not a change to wait for; the
                // contract is only that a later one wakes us.
                if gate.state() == GateState::Active {
                    let now = gate.wait_for_change(seen, PATIENCE);
                    assert_ne!(
                        now,
                        seen,
                        "seed {seed}: wait_for_change slept {:?} through a transition",
                        t0.elapsed()
                    );
                }
                woke.fetch_add(1, Ordering::Relaxed);
            }));
        }
        for w in 0..2u64 {
            let gate = gate.clone();
            let woke = woke.clone();
            let start = start.clone();
            let mut rng = Rng::new(seed ^ (w + 23));
            waiters.push(std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .unwrap();
                start.wait();
                rng.pause();
                let s = rt
                    .block_on(async { tokio::time::timeout(PATIENCE, gate.closed()).await })
                    .unwrap_or_else(|_| panic!("seed {seed}: closed() never resolved"));
                assert_ne!(s, GateState::Active, "seed {seed}");
                woke.fetch_add(1, Ordering::Relaxed);
            }));
        }
        start.wait();
        rng.pause();
        if rng.below(3) == 0 {
            gate.set_offline();
        } else {
            gate.revoke(RevokeReason::GrantRevoked);
        }
        for w in waiters {
            w.join()
                .unwrap_or_else(|_| panic!("seed {seed}: a waiter failed"));
        }
        assert_eq!(woke.load(Ordering::Relaxed), 4, "seed {seed}");
    }
}
