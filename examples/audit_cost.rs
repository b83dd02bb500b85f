//! What auditing every delegate redemption costs the hot path (`bench/audit-cost`): the time a
//! request spends on its audit record when it waits for the insert (`Journal::record`, one
//! statement per request) against the batched writer it uses (`Journal::record_soon`: a queue
//! send; a background task writes what gathered in one statement), and a request that records
//! nothing, as the baseline. Concurrent callers, as a loaded server has them.
//!
//!   DATABASE_URL=postgres://… cargo run --release --example audit_cost

use std::time::{Duration, Instant};

use token_broker::audit::{event, Journal, Subject};
use token_broker::vault::{open, AuditAction};
use uuid::Uuid;

const CALLERS: usize = 64;
const PER_CALLER: usize = 300;
const ROUNDS: usize = 5;

async fn round(journal: &Journal, mode: &'static str) -> Duration {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CALLERS {
        let journal = journal.clone();
        tasks.push(tokio::spawn(async move {
            let token_id = Uuid::new_v4();
            for _ in 0..PER_CALLER {
                let subject = Subject {
                    token_id,
                    user_id: "alice",
                    task_id: "bench",
                };
                let record = event(
                    "client:job-runner",
                    subject,
                    AuditAction::DelegateUsed,
                    true,
                    Some("sub:sa"),
                );
                match mode {
                    "awaited" => {
                        journal
                            .record(
                                record.actor.as_str(),
                                subject,
                                AuditAction::DelegateUsed,
                                true,
                                Some("sub:sa"),
                            )
                            .await
                    }
                    "batched" => journal.record_soon(record).await,
                    _ => drop(record),
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    started.elapsed()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| "sqlite::memory:".into());
    let vault = open(&url, 20).await?;
    let journal = Journal::new(vault, None);
    let calls = (CALLERS * PER_CALLER) as f64;
    println!("{CALLERS} callers x {PER_CALLER} records, {ROUNDS} rounds, median per record:");
    let mut baseline = 0.0;
    for mode in ["none", "batched", "awaited"] {
        let mut per_call = Vec::new();
        for _ in 0..ROUNDS {
            let took = round(&journal, mode).await;
            per_call.push(took.as_secs_f64() * 1e6 / calls);
        }
        let m = median(per_call);
        if mode == "none" {
            baseline = m;
        }
        println!(
            "  {mode:8} {m:9.2} us/record  ({:.1}x the baseline)",
            m / baseline.max(1e-9)
        );
    }
    // Let the batched writer drain before the process ends.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}
