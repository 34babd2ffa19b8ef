//! `fanout`: N live sessions of one tenant, each with its event stream open on one control
//! process; then one `DELETE /v1/tenants/{slug}` and, per stream, how long after the call its
//! `event: revoked` arrived. Also the server's RSS before and with the streams open.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use grantfs::api::{CreateTenant, Exchange, ExchangeRequest, TicketIssued};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::control::{Control, raise_nofile, threads};
use crate::http::{Conn, request};
use crate::stats::{round3, summary};
use crate::tickets::ticket_body;

/// Sends every request with `concurrency` keep-alive connections; answers in request order.
/// Any answer other than `expect` fails the whole call.
async fn call_all(
    addr: SocketAddr,
    concurrency: usize,
    reqs: Vec<Vec<u8>>,
    expect: u16,
) -> Result<Vec<Vec<u8>>> {
    let reqs = Arc::new(reqs);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency.min(reqs.len()) {
        let (reqs, next) = (reqs.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut conn = Conn::connect(addr).await?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = reqs.get(i) else { break };
                let r = conn.call(req).await?;
                if r.status != expect {
                    bail!(
                        "request {i} answered {}: {}",
                        r.status,
                        String::from_utf8_lossy(&r.body)
                    );
                }
                out.push((i, r.body));
            }
            Ok::<_, anyhow::Error>(out)
        }));
    }
    let mut all: Vec<Option<Vec<u8>>> = vec![None; reqs.len()];
    for t in tasks {
        for (i, b) in t.await.context("request task")?? {
            all[i] = Some(b);
        }
    }
    all.into_iter()
        .map(|b| b.context("a request was not answered"))
        .collect()
}

/// What each stream task reports.
enum StreamNote {
    Opened,
    Revoked(Instant),
    Failed(String),
}

pub async fn run(control_bin: &Path, n: usize, open_concurrency: usize) -> Result<Value> {
    let nofile = raise_nofile(2 * n as u64 + 1024)?;
    if nofile < n as u64 + 256 {
        bail!("the open-file limit is {nofile}; {n} streams need more");
    }
    let ctl = Control::start(control_bin)?;
    let client = ctl.client()?;
    let addr = ctl.addr;
    let ws = client.create_workspace("fanout-bench").await?;
    let slug = "fanout";
    client
        .create_tenant(&CreateTenant {
            slug: slug.into(),
            external_id: None,
            metadata: None,
        })
        .await?;

    let t = Instant::now();
    let reqs = (0..n)
        .map(|i| {
            let body = ticket_body(slug, &format!("rt-{i}"), &ws.reference, 3600);
            request(addr, "POST", "/v1/tickets", Some(&ctl.api_key), Some(&body))
        })
        .collect();
    let issued: Vec<TicketIssued> = call_all(addr, 32, reqs, 201)
        .await?
        .iter()
        .map(|b| serde_json::from_slice(b))
        .collect::<Result<_, _>>()?;
    let issue_s = t.elapsed().as_secs_f64();
    eprintln!("issued {n} tickets in {issue_s:.1} s");

    let t = Instant::now();
    let reqs = issued
        .iter()
        .map(|ti| {
            let body = serde_json::to_vec(&ExchangeRequest {
                ticket: ti.mount_ticket.clone(),
            })
            .unwrap_or_default();
            request(addr, "POST", "/v1/sessions/exchange", None, Some(&body))
        })
        .collect();
    let exchanged: Vec<Exchange> = call_all(addr, 32, reqs, 200)
        .await?
        .iter()
        .map(|b| serde_json::from_slice(b))
        .collect::<Result<_, _>>()?;
    let exchange_s = t.elapsed().as_secs_f64();
    eprintln!("exchanged {n} tickets in {exchange_s:.1} s");
    drop(issued);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = ctl.rss_mib()?;

    let t = Instant::now();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let sem = Arc::new(Semaphore::new(open_concurrency));
    let mut tasks = Vec::with_capacity(n);
    for ex in &exchanged {
        let req = request(
            addr,
            "GET",
            &format!("/v1/sessions/{}/events", ex.session_id),
            Some(&ex.session_token),
            None,
        );
        let (tx, sem) = (tx.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let opened = async {
                let _permit = sem.acquire_owned().await?;
                let mut c = Conn::connect(addr).await?;
                let status = c.open_stream(&req).await?;
                if status != 200 {
                    bail!("event stream answered {status}");
                }
                c.wait_for(b"event: state").await?;
                Ok::<_, anyhow::Error>(c)
            };
            let mut c = match opened.await {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(StreamNote::Failed(format!("opening: {e:#}")));
                    return;
                }
            };
            let _ = tx.send(StreamNote::Opened);
            let note = match c.wait_for(b"event: revoked").await {
                Ok(()) => StreamNote::Revoked(Instant::now()),
                Err(e) => StreamNote::Failed(format!("waiting for revoked: {e}")),
            };
            let _ = tx.send(note);
            // Keep the connection until the end of the run so closing does not race the others.
            let _ = c.wait_for(b"\x00never").await;
        }));
    }
    drop(tx);
    let mut opened = 0;
    let mut failures: Vec<String> = Vec::new();
    let open_deadline = Instant::now() + Duration::from_secs(300);
    while opened + failures.len() < n {
        match tokio::time::timeout_at(open_deadline.into(), rx.recv()).await {
            Ok(Some(StreamNote::Opened)) => opened += 1,
            Ok(Some(StreamNote::Failed(e))) => failures.push(e),
            Ok(Some(StreamNote::Revoked(_))) => failures.push("revoked before the delete".into()),
            Ok(None) | Err(_) => break,
        }
    }
    let open_s = t.elapsed().as_secs_f64();
    eprintln!(
        "opened {opened} event streams in {open_s:.1} s ({} failed)",
        failures.len()
    );
    if opened == 0 {
        bail!(
            "no event stream opened: {}",
            failures.first().map(String::as_str).unwrap_or("timeout")
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_streams = ctl.rss_mib()?;
    let threads_streams = threads(ctl.pid());
    if let Ok(hold) = std::env::var("GRANTFS_BENCH_HOLD_SECONDS")
        && let Ok(s) = hold.parse::<u64>()
    {
        eprintln!(
            "holding {s} s with the streams open (server pid {})",
            ctl.pid()
        );
        tokio::time::sleep(Duration::from_secs(s)).await;
    }
    let mut admin = Conn::connect(addr).await?;
    let metrics = admin
        .call(&request(addr, "GET", "/metrics", None, None))
        .await?;
    let open_on_server = String::from_utf8_lossy(&metrics.body)
        .lines()
        .find_map(|l| l.strip_prefix("grantfs_event_streams_open "))
        .and_then(|v| v.trim().parse::<u64>().ok());

    let del = request(
        addr,
        "DELETE",
        &format!("/v1/tenants/{slug}"),
        Some(&ctl.api_key),
        None,
    );
    let t0 = Instant::now();
    let answer = admin.call(&del).await?;
    let t1 = Instant::now();
    if answer.status != 200 {
        bail!(
            "DELETE /v1/tenants/{slug} answered {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
    }
    let counts: Value = serde_json::from_slice(&answer.body)?;
    let delete_ms = (t1 - t0).as_secs_f64() * 1000.0;
    eprintln!("DELETE tenant took {delete_ms:.1} ms: {counts}");

    let mut after_return = Vec::with_capacity(opened);
    let mut after_start = Vec::with_capacity(opened);
    let wait_deadline = t1 + Duration::from_secs(10);
    while after_return.len() + failures.len() < n {
        match tokio::time::timeout_at(wait_deadline.into(), rx.recv()).await {
            Ok(Some(StreamNote::Revoked(at))) => {
                after_start.push(at.duration_since(t0).as_secs_f64() * 1000.0);
                // Signed: an event may arrive before the call's answer is read.
                let ms = if at >= t1 {
                    at.duration_since(t1).as_secs_f64() * 1000.0
                } else {
                    -(t1.duration_since(at).as_secs_f64() * 1000.0)
                };
                after_return.push(ms);
            }
            Ok(Some(StreamNote::Failed(e))) => failures.push(e),
            Ok(Some(StreamNote::Opened)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    let delivered = after_return.len();
    let within_1s = after_return.iter().filter(|&&ms| ms <= 1000.0).count();
    eprintln!("delivered {delivered}/{n} revoked events");
    for t in &tasks {
        t.abort();
    }
    let ret = summary(&after_return);
    let start = summary(&after_start);
    let first_failure = failures.first().cloned();
    Ok(json!({
        "bench": "fanout",
        "streams": n,
        "opened": opened,
        "open_on_server": open_on_server,
        "delete_call_ms": round3(delete_ms),
        "delete_answer": counts,
        "delivered": delivered,
        "delivered_within_1s": within_1s,
        "p50_ms": ret["p50_ms"],
        "p99_ms": ret["p99_ms"],
        "max_ms": ret["max_ms"],
        "after_call_return": ret,
        "after_call_start": start,
        "server_rss_mib": round3(rss_streams),
        "baseline_server_rss_mib_before_streams": round3(rss_before),
        "server_threads": threads_streams,
        "rss_per_stream_kib": round3((rss_streams - rss_before) * 1024.0 / opened as f64),
        "failures": failures.len(),
        "first_failure": first_failure,
        "setup_seconds": {
            "issue": round3(issue_s),
            "exchange": round3(exchange_s),
            "open_streams": round3(open_s),
        },
        "nofile_limit": nofile,
        "target_met": delivered == n && within_1s == n && rss_streams < 300.0,
    }))
}
