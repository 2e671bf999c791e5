//! When to offer a deferred command again (in-process arithmetic, no I/O).
//!
//! A command whose integration has spent its DingTalk budget is not executed: it is nak'ed with
//! a delay so its slot serves another tenant at once (fairness). Naive delays would bring a
//! 1,000-command burst back all at once after `retry_after`; instead each deferred command of
//! the same budget gets the next free slot at the budget's rate, so the burst returns about as
//! fast as it can be sent and other tenants' commands interleave with it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The longest delay of one deferral; a command still without budget then is deferred again.
pub const MAX_DEFER: Duration = Duration::from_secs(30);
/// Beyond this many budgets tracked, slots in the past are forgotten.
const TRACKED: usize = 10_000;

/// Spreads deferred commands over their budget's future slots.
#[derive(Debug, Default)]
pub struct Pacer {
    next_slot: Mutex<HashMap<String, Instant>>,
}

impl Pacer {
    /// A pacer with no history.
    pub fn new() -> Self {
        Self::default()
    }

    /// The delay of a command deferred at `now` for budget `key`, which is free again after
    /// `wait` and then admits `per_second` calls a second.
    pub fn defer(&self, key: &str, wait: Duration, per_second: u32, now: Instant) -> Duration {
        let spacing = Duration::from_secs(1) / per_second.max(1);
        let earliest = now + wait;
        let mut slots = self
            .next_slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slots.len() > TRACKED {
            slots.retain(|_, slot| *slot > now);
        }
        let slot = match slots.get(key) {
            Some(next) if *next > earliest => *next,
            _ => earliest,
        };
        slots.insert(key.to_owned(), slot + spacing);
        (slot - now).min(MAX_DEFER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_spread_at_the_budgets_rate() {
        let pacer = Pacer::new();
        let now = Instant::now();
        let delays: Vec<u128> = (0..4)
            .map(|_| {
                pacer
                    .defer("acme/batchSend", Duration::from_millis(200), 20, now)
                    .as_millis()
            })
            .collect();
        assert_eq!(delays, [200, 250, 300, 350]);
    }

    #[test]
    fn budgets_do_not_share_slots_and_delays_are_capped() {
        let pacer = Pacer::new();
        let now = Instant::now();
        for _ in 0..100 {
            pacer.defer("a", Duration::ZERO, 1, now);
        }
        assert_eq!(pacer.defer("a", Duration::ZERO, 1, now), MAX_DEFER);
        assert_eq!(
            pacer.defer("b", Duration::from_millis(10), 1, now),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn slots_in_the_past_are_not_reused() {
        let pacer = Pacer::new();
        let start = Instant::now();
        pacer.defer("a", Duration::ZERO, 1, start);
        let later = start + Duration::from_secs(5);
        assert_eq!(
            pacer.defer("a", Duration::from_millis(50), 1, later),
            Duration::from_millis(50)
        );
    }
}
