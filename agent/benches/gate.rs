//! The session gate's hot path: `check()` on an open and on a closed gate, and `check_write()`,
//! against an inline `AtomicU8` load + compare as the baseline (the floor any gate can reach).

use std::hint::black_box;
use std::sync::atomic::{AtomicU8, Ordering};

use criterion::{Criterion, criterion_group, criterion_main};
use grantfs_agent::session_gate::{Mode, RevokeReason, SessionGate};

const FAR_FUTURE_MS: i64 = 4_102_444_800_000; // 2100-01-01

fn gate(c: &mut Criterion) {
    let mut g = c.benchmark_group("gate");

    let flag = AtomicU8::new(0);
    g.bench_function("baseline_atomic_load_cmp", |b| {
        b.iter(|| black_box(&flag).load(Ordering::Acquire) == 0)
    });

    let open = SessionGate::new(Mode::Rw, FAR_FUTURE_MS);
    g.bench_function("check_open", |b| b.iter(|| black_box(&*open).check()));

    let closed = SessionGate::new(Mode::Rw, FAR_FUTURE_MS);
    closed.revoke(RevokeReason::SessionRevoked);
    g.bench_function("check_closed", |b| b.iter(|| black_box(&*closed).check()));

    g.bench_function("check_write_rw", |b| {
        b.iter(|| black_box(&*open).check_write())
    });

    let ro = SessionGate::new(Mode::Ro, FAR_FUTURE_MS);
    g.bench_function("check_write_ro", |b| {
        b.iter(|| black_box(&*ro).check_write())
    });

    g.finish();
}

criterion_group!(benches, gate);
criterion_main!(benches);
