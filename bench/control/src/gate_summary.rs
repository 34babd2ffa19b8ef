//! `gate-summary`: criterion's estimates of the session-gate bench (`agent/benches/gate.rs`) as one
//! JSON object, with each check's ratio to the inline atomic-load baseline.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::stats::round3;

/// Every `<dir>/**/new/{benchmark,estimates}.json` pair: (full id, mean ns, median ns).
fn collect(dir: &Path, out: &mut Vec<(String, f64, f64)>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if !p.is_dir() {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "new") {
            let (Ok(b), Ok(est)) = (
                std::fs::read(p.join("benchmark.json")),
                std::fs::read(p.join("estimates.json")),
            ) else {
                continue;
            };
            let b: Value = serde_json::from_slice(&b)?;
            let est: Value = serde_json::from_slice(&est)?;
            let id = b["full_id"].as_str().unwrap_or_default().to_owned();
            let mean = est["mean"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
            let median = est["median"]["point_estimate"].as_f64().unwrap_or(f64::NAN);
            out.push((id, mean, median));
        } else {
            collect(&p, out)?;
        }
    }
    Ok(())
}

pub fn run(dir: &Path) -> Result<Value> {
    let mut rows = Vec::new();
    collect(dir, &mut rows)?;
    rows.retain(|(id, _, _)| id.starts_with("gate/"));
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    if rows.is_empty() {
        bail!("no gate/* criterion results under {}", dir.display());
    }
    let baseline = rows
        .iter()
        .find(|(id, _, _)| id.contains("baseline"))
        .map(|r| r.1);
    let mut benches = serde_json::Map::new();
    let mut worst: f64 = 0.0;
    for (id, mean, median) in &rows {
        if !id.contains("baseline") {
            worst = worst.max(*mean);
        }
        benches.insert(
            id.clone(),
            json!({
                "mean_ns": round3(*mean),
                "median_ns": round3(*median),
                "ratio_to_baseline": baseline.map(|b| round3(mean / b)),
            }),
        );
    }
    Ok(json!({
        "bench": "gate",
        "benches": benches,
        "baseline_ns": baseline.map(round3),
        "worst_check_ns": round3(worst),
        "target_ns": 20,
        "target_met": worst <= 20.0,
    }))
}
