//! The fault soak (a command, not a test): rounds of every fault kind in `support::soak` —
//! registry, object store and API server faults through Toxiproxy, a registry's 429, and
//! `kill -9` of each controller mid-work — for SOAK_MINUTES (default 30), with every invariant
//! checked throughout; then the table: faults per kind, recovery p50/p95, downloads checked,
//! violations (must be 0), memory. Exits non-zero on a violation.
//!
//!   make soak
//!   SOAK_MINUTES=120 SOAK_HOLD_SECS=15 SOAK_KILLS=4 cargo bench --bench soak
//!
//! SOAK_HOLD_SECS (default 10): how long a network fault lasts; every 10th registry outage
//! lasts SOAK_LONG_OUTAGE_SECS (default 180) instead. SOAK_KILLS (default 4): kills of each
//! controller per round. SOAK_REPORT: a file the table is also written to. SOAK_ONLY: only the
//! faults whose name (as the table prints it) contains one of these `|`-separated texts, e.g.
//! `API server: outage|kill -9 apply`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};
use support::bench::env_or;

use support::soak::{Fault, Soak, SoakOptions};

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs harness-less benches too; only `cargo bench` passes --bench.
    if !std::env::args().any(|a| a == "--bench") {
        println!("soak: a long run, not a test; run it with `make soak`");
        return;
    }
    let minutes: u64 = env_or("SOAK_MINUTES", 30);
    let options = SoakOptions {
        hold: Duration::from_secs(env_or("SOAK_HOLD_SECS", 10)),
        long_outage: Some((
            10,
            Duration::from_secs(env_or("SOAK_LONG_OUTAGE_SECS", 180)),
        )),
        kills_per_round: env_or("SOAK_KILLS", 4),
    };
    let platform = support::platform();
    let kube = platform.client().await;
    let mut soak = Soak::start(&platform, &kube).await;
    let until = Instant::now() + Duration::from_secs(minutes * 60);
    let only = std::env::var("SOAK_ONLY").unwrap_or_default();
    let chosen = |f: &Fault| only.split('|').any(|text| f.name().contains(text));
    let mut rounds = 0;
    'soak: loop {
        let round = Fault::round(options.kills_per_round).into_iter();
        for fault in round.filter(chosen) {
            if Instant::now() >= until {
                break 'soak;
            }
            soak.inject(fault, &options).await;
        }
        rounds += 1;
        eprintln!("soak: round {rounds} done");
    }
    let report = soak.finish().await;
    let table = format!("{}\nrounds: {rounds}\n", report.table());
    println!("{table}");
    if let Ok(file) = std::env::var("SOAK_REPORT") {
        std::fs::write(&file, &table).expect("write SOAK_REPORT");
    }
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
}
