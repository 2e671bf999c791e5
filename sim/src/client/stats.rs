//! Latency percentiles for load reports: a bounded sample, sorted once at the end.

use std::time::Duration;

use serde::Serialize;

/// At most this many samples are kept (a 200/s run of over an hour); later ones are counted but
/// not sampled, which biases long runs towards their first hour, as the report says.
const MAX_SAMPLES: usize = 1_000_000;

/// Collected latencies.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    micros: Vec<u64>,
    unsampled: u64,
}

/// Percentiles of a run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    /// Samples behind the numbers.
    pub samples: u64,
    /// Answers not sampled (over the sample cap).
    pub unsampled: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

impl Latencies {
    /// Adds one latency.
    pub fn push(&mut self, latency: Duration) {
        if self.micros.len() < MAX_SAMPLES {
            self.micros
                .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
        } else {
            self.unsampled += 1;
        }
    }

    /// Nearest-rank percentiles.
    pub fn summary(&self) -> LatencySummary {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let at = |quantile: f64| -> f64 {
            if sorted.is_empty() {
                return 0.0;
            }
            let rank = (quantile * sorted.len() as f64).ceil() as usize;
            let index = rank.clamp(1, sorted.len()) - 1;
            sorted[index] as f64 / 1000.0
        };
        LatencySummary {
            samples: sorted.len() as u64,
            unsampled: self.unsampled,
            p50_ms: at(0.50),
            p90_ms: at(0.90),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_of_one_to_a_hundred_ms() {
        let mut latencies = Latencies::default();
        for ms in (1..=100).rev() {
            latencies.push(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert_eq!(
            (
                summary.p50_ms,
                summary.p90_ms,
                summary.p99_ms,
                summary.max_ms
            ),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(summary.samples, 100);
    }

    #[test]
    fn an_empty_run_reports_zeros() {
        assert_eq!(Latencies::default().summary(), LatencySummary::default());
    }
}
