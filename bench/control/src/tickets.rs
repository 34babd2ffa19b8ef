//! `tickets`: one-shot `POST /v1/tickets` (distinct runtime ids over a few tenants) as fast as the
//! server goes over keep-alive connections, and `GET /healthz` at the same concurrency in the same
//! run as the baseline, so the ratio says what a ticket costs against the server's bare HTTP path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use grantfs::api::CreateTicket;
use serde_json::{Value, json};

use crate::control::Control;
use crate::http::{Conn, request};
use crate::stats::{round3, summary};

/// Builds the request bytes for (worker, sequence number).
pub type MakeRequest = Arc<dyn Fn(usize, u64) -> Vec<u8> + Send + Sync>;

/// What one closed-loop load run measured.
pub struct Load {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies_ms: Vec<f64>,
}

impl Load {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn json(&self) -> Value {
        let mut v = summary(&self.latencies_ms);
        v["requests_per_sec"] = json!(round3(self.rate()));
        v["ok"] = json!(self.ok);
        v["errors"] = json!(self.errors);
        v["first_error"] = json!(self.first_error);
        v["seconds"] = json!(round3(self.elapsed.as_secs_f64()));
        v
    }
}

/// `concurrency` connections, each sending its next request as soon as the last one is answered,
/// until `duration` has passed (or `total` requests were sent, when given).
pub async fn closed_loop(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    total: Option<u64>,
    expect: u16,
    make: MakeRequest,
) -> Result<Load> {
    let start = Instant::now();
    let deadline = start + duration;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for w in 0..concurrency {
        let make = make.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None::<String>);
            let mut conn = match Conn::connect(addr).await {
                Ok(c) => c,
                Err(e) => return (lat, ok, 1, Some(format!("connect: {e}"))),
            };
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if total.is_some_and(|t| i >= t) {
                    break;
                }
                let req = make(w, i);
                let t0 = Instant::now();
                match conn.call(&req).await {
                    Ok(r) if r.status == expect => {
                        ok += 1;
                        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(r) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| {
                            format!("{}: {}", r.status, String::from_utf8_lossy(&r.body))
                        });
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                        match Conn::connect(addr).await {
                            Ok(c) => conn = c,
                            Err(_) => break,
                        }
                    }
                }
            }
            (lat, ok, errors, first_error)
        }));
    }
    let mut load = Load {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies_ms: Vec::new(),
    };
    for t in tasks {
        let (lat, ok, errors, first) = t.await.context("load task")?;
        load.latencies_ms.extend(lat);
        load.ok += ok;
        load.errors += errors;
        if load.first_error.is_none() {
            load.first_error = first;
        }
    }
    load.elapsed = start.elapsed();
    Ok(load)
}

/// The body of a one-shot ticket request for runtime `runtime` of tenant `tenant`.
pub fn ticket_body(tenant: &str, runtime: &str, workspace: &str, ttl: i64) -> Vec<u8> {
    serde_json::to_vec(&CreateTicket {
        tenant_slug: tenant.to_owned(),
        runtime_id: runtime.to_owned(),
        workspace: workspace.to_owned(),
        mode: "rw".to_owned(),
        ttl_seconds: ttl,
    })
    .unwrap_or_default()
}

pub async fn run(
    control_bin: &Path,
    seconds: u64,
    baseline_seconds: u64,
    concurrency: usize,
    tenants: usize,
) -> Result<Value> {
    let ctl = Control::start(control_bin)?;
    let client = ctl.client()?;
    let ws = client.create_workspace("tickets-bench").await?;
    let addr = ctl.addr;

    eprintln!("healthz baseline: {baseline_seconds} s at concurrency {concurrency}");
    let health_req = request(addr, "GET", "/healthz", None, None);
    let health = closed_loop(
        addr,
        concurrency,
        Duration::from_secs(baseline_seconds),
        None,
        200,
        Arc::new(move |_, _| health_req.clone()),
    )
    .await?;
    eprintln!("  {:.0} req/s", health.rate());

    eprintln!("tickets: {seconds} s at concurrency {concurrency}, {tenants} tenants");
    let key = ctl.api_key.clone();
    let wsref = ws.reference.clone();
    let rss_before = ctl.rss_mib()?;
    let tickets = closed_loop(
        addr,
        concurrency,
        Duration::from_secs(seconds),
        None,
        201,
        Arc::new(move |w, i| {
            let body = ticket_body(
                &format!("bench-t{}", i as usize % tenants),
                &format!("rt-{w}-{i}"),
                &wsref,
                600,
            );
            request(addr, "POST", "/v1/tickets", Some(&key), Some(&body))
        }),
    )
    .await?;
    eprintln!(
        "  {:.0} tickets/s, {} errors",
        tickets.rate(),
        tickets.errors
    );
    let ratio = tickets.rate() / health.rate().max(1e-9);
    Ok(json!({
        "bench": "tickets",
        "store": "sqlite",
        "concurrency": concurrency,
        "tenants": tenants,
        "tickets_per_sec": round3(tickets.rate()),
        "p50_ms": tickets.json()["p50_ms"],
        "p99_ms": tickets.json()["p99_ms"],
        "errors": tickets.errors,
        "tickets": tickets.json(),
        "baseline_healthz": health.json(),
        "healthz_per_sec": round3(health.rate()),
        "ratio_tickets_to_healthz": round3(ratio),
        "target_tickets_per_sec": 2000,
        "target_met": tickets.rate() >= 2000.0 && tickets.errors == 0,
        "server_rss_mib_before": round3(rss_before),
        "server_rss_mib_after": round3(ctl.rss_mib()?),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }))
}
