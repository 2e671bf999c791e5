//! Rate-limit arithmetic, free of I/O: DingTalk's per-second API limit and the custom robot's
//! per-minute limit with its penalty. Callers pass the current time in.

use std::collections::VecDeque;

/// Calls admitted in the current one-second window for one (app, API).
///
/// Windows are whole wall-clock seconds (`now_ms / 1000`), so a burst straddling a second
/// boundary may pass twice the limit within 1000 ms, as with a fixed-window counter at DingTalk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QpsWindow {
    second: i64,
    count: u32,
}

impl QpsWindow {
    /// Admits one call at `now_ms` if fewer than `limit` were admitted in this second; refused
    /// calls do not count.
    pub fn admit(&mut self, now_ms: i64, limit: u32) -> bool {
        let second = now_ms.div_euclid(1000);
        if second != self.second {
            self.second = second;
            self.count = 0;
        }
        if self.count < limit {
            self.count += 1;
            true
        } else {
            false
        }
    }
}

/// Why a custom-robot message was refused by [`MinuteLimiter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// This message is over the per-minute limit; the robot is now throttled until `until_ms`.
    JustNow {
        /// When sending works again.
        until_ms: i64,
    },
    /// The robot is still serving an earlier penalty.
    Still {
        /// When sending works again.
        until_ms: i64,
    },
}

/// A custom group robot's "20 messages per minute, then throttled for about 10 minutes"
/// (PROTOCOL §4.9): a sliding 60-second window of accepted sends plus a penalty deadline.
#[derive(Debug, Clone, Default)]
pub struct MinuteLimiter {
    sent_ms: VecDeque<i64>,
    throttled_until_ms: Option<i64>,
}

impl MinuteLimiter {
    /// The window the limit counts over.
    pub const WINDOW_MS: i64 = 60_000;

    /// Admits one message at `now_ms` unless `limit` were accepted in the last minute or a
    /// penalty of `penalty_ms` is running. Holds at most `limit` timestamps.
    pub fn admit(&mut self, now_ms: i64, limit: usize, penalty_ms: i64) -> Result<(), Throttled> {
        if let Some(until_ms) = self.throttled_until_ms {
            if now_ms < until_ms {
                return Err(Throttled::Still { until_ms });
            }
            self.throttled_until_ms = None;
        }
        while self
            .sent_ms
            .front()
            .is_some_and(|&at| now_ms - at >= Self::WINDOW_MS)
        {
            self.sent_ms.pop_front();
        }
        if self.sent_ms.len() >= limit {
            let until_ms = now_ms + penalty_ms;
            self.throttled_until_ms = Some(until_ms);
            self.sent_ms.clear();
            return Err(Throttled::JustNow { until_ms });
        }
        self.sent_ms.push_back(now_ms);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qps_window_refuses_the_call_over_the_limit_and_resets_next_second() {
        let mut window = QpsWindow::default();
        let start = 1_700_000_000_000;
        assert!((0..20).all(|i| window.admit(start + i, 20)));
        assert!(!window.admit(start + 999, 20));
        assert!(window.admit(start + 1000, 20));
    }

    #[test]
    fn qps_window_is_a_wall_clock_second_not_a_sliding_one() {
        let mut window = QpsWindow::default();
        assert!(window.admit(1_999, 1));
        assert!(window.admit(2_000, 1));
        assert!(!window.admit(2_999, 1));
    }

    #[test]
    fn custom_robot_21st_message_in_a_minute_is_throttled_for_the_penalty() {
        let mut limiter = MinuteLimiter::default();
        let t = 1_000_000;
        for i in 0..20 {
            assert_eq!(limiter.admit(t + i, 20, 600_000), Ok(()));
        }
        assert_eq!(
            limiter.admit(t + 30_000, 20, 600_000),
            Err(Throttled::JustNow {
                until_ms: t + 630_000
            })
        );
        assert_eq!(
            limiter.admit(t + 120_000, 20, 600_000),
            Err(Throttled::Still {
                until_ms: t + 630_000
            })
        );
        assert_eq!(limiter.admit(t + 630_000, 20, 600_000), Ok(()));
    }

    #[test]
    fn custom_robot_messages_older_than_a_minute_leave_the_window() {
        let mut limiter = MinuteLimiter::default();
        for i in 0..20 {
            assert_eq!(limiter.admit(i * 1000, 20, 600_000), Ok(()));
        }
        assert_eq!(limiter.admit(60_000, 20, 600_000), Ok(()));
    }
}
