//! The call record: every accepted call, and separately every refused one with its reason, in
//! arrival order, for tests to assert on (`GET /_sim/calls`, [`crate::SimState::calls`]).
//!
//! Memory is bounded: each list keeps the newest `cap` entries and counts what it dropped.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::Api;

/// One call as the simulator saw it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedCall {
    /// Arrival order across both lists (accepted and rejected), from 1.
    pub seq: u64,
    /// When it arrived, ms since the epoch.
    pub at_ms: i64,
    /// The endpoint.
    pub api: Api,
    /// The calling app's AppKey (custom robots: the access token; session webhooks: the robot
    /// code), when known.
    pub app: Option<String>,
    /// The request body as JSON (query parameters for GETs, a summary for uploads).
    pub body: Value,
    /// The HTTP status answered.
    pub status: u16,
    /// Why it was refused (`None` for accepted calls).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Which calls to return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CallFilter {
    /// Only this endpoint, by name.
    pub api: Option<Api>,
    /// Only this app.
    pub app: Option<String>,
}

impl CallFilter {
    /// Every call.
    pub fn all() -> Self {
        Self::default()
    }

    /// Calls to one endpoint.
    pub fn api(api: Api) -> Self {
        Self {
            api: Some(api),
            app: None,
        }
    }

    fn matches(&self, call: &RecordedCall) -> bool {
        self.api.is_none_or(|api| api == call.api)
            && self
                .app
                .as_deref()
                .is_none_or(|app| call.app.as_deref() == Some(app))
    }
}

/// A bounded, ordered list of calls.
#[derive(Debug)]
struct Ring {
    calls: VecDeque<RecordedCall>,
    dropped: u64,
}

impl Ring {
    fn push(&mut self, call: RecordedCall, cap: usize) {
        if self.calls.len() >= cap {
            self.calls.pop_front();
            self.dropped += 1;
        }
        self.calls.push_back(call);
    }
}

/// Accepted and rejected calls.
#[derive(Debug)]
pub struct CallLog {
    accepted: Ring,
    rejected: Ring,
    next_seq: u64,
    cap: usize,
}

impl CallLog {
    /// A log keeping at most `cap` accepted and `cap` rejected calls.
    pub fn new(cap: usize) -> Self {
        let ring = || Ring {
            calls: VecDeque::new(),
            dropped: 0,
        };
        Self {
            accepted: ring(),
            rejected: ring(),
            next_seq: 1,
            cap: cap.max(1),
        }
    }

    /// Records a call; `reason` is `Some` for a refusal.
    pub fn record(
        &mut self,
        at_ms: i64,
        api: Api,
        app: Option<String>,
        body: Value,
        status: u16,
        reason: Option<String>,
    ) {
        let call = RecordedCall {
            seq: self.next_seq,
            at_ms,
            api,
            app,
            body,
            status,
            reason,
        };
        self.next_seq += 1;
        let ring = if call.reason.is_some() {
            &mut self.rejected
        } else {
            &mut self.accepted
        };
        ring.push(call, self.cap);
    }

    /// Accepted calls matching `filter`, oldest first.
    pub fn accepted(&self, filter: &CallFilter) -> Vec<RecordedCall> {
        select(&self.accepted, filter)
    }

    /// Refused calls matching `filter`, oldest first.
    pub fn rejected(&self, filter: &CallFilter) -> Vec<RecordedCall> {
        select(&self.rejected, filter)
    }

    /// How many accepted and rejected calls were dropped to stay within the cap.
    pub fn dropped(&self) -> (u64, u64) {
        (self.accepted.dropped, self.rejected.dropped)
    }

    /// Removes and returns every accepted call, oldest first (refused ones stay): a reader that
    /// follows a long run without copying the whole record each time.
    pub fn take_accepted(&mut self) -> Vec<RecordedCall> {
        std::mem::take(&mut self.accepted.calls).into()
    }

    /// Forgets every call (sequence numbers keep counting).
    pub fn clear(&mut self) {
        *self = Self {
            next_seq: self.next_seq,
            ..Self::new(self.cap)
        };
    }
}

fn select(ring: &Ring, filter: &CallFilter) -> Vec<RecordedCall> {
    ring.calls
        .iter()
        .filter(|call| filter.matches(call))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn taking_the_accepted_calls_leaves_the_refused_ones_and_keeps_counting() {
        let mut log = CallLog::new(10);
        log.record(1, Api::GroupSend, None, json!({}), 200, None);
        log.record(2, Api::GroupSend, None, json!({}), 403, Some("qps".into()));
        assert_eq!(
            log.take_accepted()
                .iter()
                .map(|c| c.seq)
                .collect::<Vec<_>>(),
            vec![1]
        );
        assert!(log.take_accepted().is_empty());
        log.record(3, Api::GroupSend, None, json!({}), 200, None);
        assert_eq!(log.take_accepted()[0].seq, 3);
        assert_eq!(log.rejected(&CallFilter::all()).len(), 1);
    }

    #[test]
    fn accepted_and_rejected_calls_are_kept_apart_in_order() {
        let mut log = CallLog::new(10);
        log.record(1, Api::GroupSend, Some("a".into()), json!({}), 200, None);
        log.record(
            2,
            Api::GroupSend,
            Some("a".into()),
            json!({}),
            400,
            Some("bad".into()),
        );
        log.record(3, Api::UserList, Some("b".into()), json!({}), 200, None);
        let accepted = log.accepted(&CallFilter::all());
        assert_eq!(
            accepted.iter().map(|c| c.seq).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(
            log.rejected(&CallFilter::all())[0].reason.as_deref(),
            Some("bad")
        );
        assert_eq!(log.accepted(&CallFilter::api(Api::UserList)).len(), 1);
        let by_app = CallFilter {
            api: None,
            app: Some("a".into()),
        };
        assert_eq!(log.accepted(&by_app).len(), 1);
    }

    #[test]
    fn the_log_keeps_the_newest_calls_and_counts_the_dropped() {
        let mut log = CallLog::new(3);
        for i in 0..5 {
            log.record(i, Api::GroupSend, None, json!(i), 200, None);
        }
        let kept: Vec<_> = log
            .accepted(&CallFilter::all())
            .iter()
            .map(|c| c.at_ms)
            .collect();
        assert_eq!(kept, vec![2, 3, 4]);
        assert_eq!(log.dropped(), (2, 0));
        log.clear();
        assert!(log.accepted(&CallFilter::all()).is_empty());
    }
}
