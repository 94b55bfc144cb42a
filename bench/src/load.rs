//! Closed-loop load: `concurrency` workers each send one operation after
//! the other for a while; latencies and failures are collected.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub name: String,
    pub concurrency: usize,
    pub operations: u64,
    pub failures: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// What is measured as a rate.
pub trait PerSecond {
    fn per_second(&self) -> f64;
}

impl PerSecond for Measurement {
    fn per_second(&self) -> f64 {
        self.per_second
    }
}

/// A result of ours beside its limit, as a ratio, with the ratio aimed at.
#[derive(Debug, Serialize)]
pub struct Versus<T> {
    pub ours: T,
    pub limit: T,
    pub ratio: f64,
    pub target: Option<f64>,
}

impl<T: PerSecond> Versus<T> {
    pub fn new(ours: T, limit: T, target: Option<f64>) -> Self {
        let ratio = ours.per_second() / limit.per_second().max(f64::MIN_POSITIVE);
        Self {
            ours,
            limit,
            ratio,
            target,
        }
    }

    /// `≥ target (met|missed)`, or nothing without a target.
    pub fn verdict(&self) -> String {
        self.target.map_or_else(String::new, |target| {
            let verdict = if self.ratio >= target {
                "met"
            } else {
                "missed"
            };
            format!("≥ {target:.2} ({verdict})")
        })
    }
}

/// Runs `operation(worker, n)` from `concurrency` workers for `duration`;
/// an operation answers whether it succeeded.
pub async fn closed_loop<F, Fut>(
    name: &str,
    concurrency: usize,
    duration: Duration,
    operation: F,
) -> Measurement
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let operation = Arc::new(operation);
    let started = Instant::now();
    let until = started + duration;
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let operation = operation.clone();
            tokio::spawn(async move {
                let (mut latencies, mut failures, mut n) = (Vec::new(), 0u64, 0u64);
                while Instant::now() < until {
                    let sent = Instant::now();
                    if !operation(worker, n).await {
                        failures += 1;
                    }
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                    n += 1;
                }
                (latencies, failures)
            })
        })
        .collect();
    let (mut latencies, mut failures) = (Vec::new(), 0);
    for worker in workers {
        if let Ok((worker_latencies, worker_failures)) = worker.await {
            latencies.extend(worker_latencies);
            failures += worker_failures;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    let measurement = Measurement {
        name: name.to_owned(),
        concurrency,
        operations: latencies.len() as u64,
        failures,
        per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
    };
    eprintln!(
        "{name} ×{concurrency}: {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, {} failed",
        measurement.per_second, measurement.p50_ms, measurement.p99_ms, measurement.failures
    );
    measurement
}

/// Starts `operation(n)` `per_second` times a second for `duration`
/// (whether or not earlier ones have finished), each timing itself: an
/// open loop, for a steady rate. `None` from an operation is a failure.
pub async fn steady_rate<F, Fut>(
    name: &str,
    per_second: u32,
    duration: Duration,
    operation: F,
) -> Measurement
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Duration>> + Send + 'static,
{
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / per_second);
    let started = Instant::now();
    let mut running = Vec::new();
    let mut n = 0;
    while started.elapsed() < duration {
        ticks.tick().await;
        running.push(tokio::spawn(operation(n)));
        n += 1;
    }
    let (mut timings, mut failures) = (Vec::new(), 0);
    for operation in running {
        match operation.await {
            Ok(Some(took)) => timings.push(took.as_secs_f64() * 1000.0),
            _ => failures += 1,
        }
    }
    timings.sort_by(f64::total_cmp);
    let measurement = Measurement {
        name: name.to_owned(),
        concurrency: per_second as usize,
        operations: n,
        failures,
        per_second: n as f64 / duration.as_secs_f64(),
        p50_ms: percentile(&timings, 0.50),
        p99_ms: percentile(&timings, 0.99),
    };
    eprintln!(
        "{name} at {per_second}/s: p50 {:.1} ms, p99 {:.1} ms, {} failed",
        measurement.p50_ms, measurement.p99_ms, measurement.failures
    );
    measurement
}

/// The `q` quantile of sorted `values` (nearest rank; 0 when empty).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64) * q).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_ranks() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.50), 50.0);
        assert_eq!(percentile(&values, 0.99), 99.0);
        assert_eq!(percentile(&values, 1.0), 100.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }
}
