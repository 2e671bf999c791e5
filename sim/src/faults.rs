//! Injected failures: rules registered through `POST /_sim/faults` (or in-process) that make
//! matching calls fail, slow down or report flow control, a given number of times or always.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::Api;

/// What an injected fault does to a matching call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer HTTP 500.
    #[serde(rename = "http_500")]
    Http500,
    /// Answer DingTalk's "system error" (`systemError` / errcode -1).
    SystemError,
    /// Answer "missing permission" (403 `AccessTokenPermissionDenied` / errcode 60011).
    #[serde(rename = "permission_60011")]
    Permission60011,
    /// Expire the live tokens (of `app`, or all) at once; not kept as a rule.
    ExpireTokens,
    /// Delay the answer by `ms`, then answer normally.
    Slow {
        /// The delay in milliseconds.
        ms: u64,
    },
    /// In batchSend answers, report these user ids in `flowControlledStaffIdList` instead of
    /// sending to them.
    FlowControl {
        /// The user ids to hold back.
        #[serde(rename = "userIds")]
        user_ids: Vec<String>,
    },
    /// Answer as if the per-second limit were exceeded.
    QpsLimit,
    /// Answer HTTP 429 (too many requests).
    #[serde(rename = "http_429")]
    Http429,
    /// Answer the egress-IP ban (PROTOCOL §6.3): `{"status":1111,"wait":5,"punish":"deny",…}`
    /// without an errcode.
    IpBan,
    /// Answer HTTP 403 with an HTML page, as DingTalk's gateway (or a proxy) does.
    HtmlPage,
    /// Carry the call out, then answer HTTP 500 as if the answer were lost on its way back (a
    /// gateway timeout behind DingTalk's front): the effect happened, the caller cannot tell.
    AnswerLost,
}

/// How many matching calls a rule affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultCount {
    /// This many, then the rule is spent.
    Times(u32),
    /// Until the rules are cleared.
    Always,
}

impl Default for FaultCount {
    fn default() -> Self {
        FaultCount::Times(1)
    }
}

impl Serialize for FaultCount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FaultCount::Times(n) => serializer.serialize_u32(*n),
            FaultCount::Always => serializer.serialize_str("always"),
        }
    }
}

impl<'de> Deserialize<'de> for FaultCount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Times(u32),
            Word(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Times(n) if n > 0 => Ok(FaultCount::Times(n)),
            Raw::Word(word) if word == "always" => Ok(FaultCount::Always),
            _ => Err(serde::de::Error::custom(
                "count must be a positive integer or \"always\"",
            )),
        }
    }
}

/// One fault rule: which calls it matches and what it does to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Only calls to this endpoint (any, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
    /// Only calls by this app, by AppKey (custom robots: by access token); any, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// What happens.
    #[serde(flatten)]
    pub kind: FaultKind,
    /// How many matching calls (default 1).
    #[serde(default)]
    pub count: FaultCount,
    /// Matching calls to let through untouched first (default 0): `after: 2` hits the third.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub after: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Fault {
    /// A fault of `kind` for the next matching call to any endpoint.
    pub fn once(kind: FaultKind) -> Self {
        Self {
            api: None,
            app: None,
            kind,
            count: FaultCount::Times(1),
            after: 0,
        }
    }

    /// Lets `calls` matching calls through before the rule applies.
    pub fn after(mut self, calls: u32) -> Self {
        self.after = calls;
        self
    }

    /// Restricts the rule to one endpoint.
    pub fn on(mut self, api: Api) -> Self {
        self.api = Some(api);
        self
    }

    /// Restricts the rule to one app.
    pub fn for_app(mut self, app: impl Into<String>) -> Self {
        self.app = Some(app.into());
        self
    }

    /// Sets how many calls the rule affects.
    pub fn times(mut self, count: FaultCount) -> Self {
        self.count = count;
        self
    }

    fn matches(&self, api: Api, app: Option<&str>) -> bool {
        let api_ok = match (&self.kind, self.api) {
            (FaultKind::FlowControl { .. }, _) if api != Api::RobotBatchSend => false,
            (_, Some(wanted)) => wanted == api,
            (_, None) => true,
        };
        let app_ok = match (&self.app, app) {
            (None, _) => true,
            (Some(wanted), Some(app)) => wanted == app,
            (Some(_), None) => false,
        };
        api_ok && app_ok
    }
}

/// A failure to answer with instead of the real result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFailure {
    /// HTTP 500.
    Http500,
    /// "system error".
    SystemError,
    /// Missing permission.
    Permission,
    /// QPS limit.
    QpsLimit,
    /// HTTP 429.
    TooManyRequests,
    /// The IP-ban answer.
    IpBan,
    /// An HTML error page.
    HtmlPage,
}

/// What the matching rules do to one call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effects {
    /// Total delay before answering.
    pub delay: Duration,
    /// The failure to answer with, if any.
    pub failure: Option<InjectedFailure>,
    /// Ids to report as flow-controlled (batchSend only).
    pub flow_controlled: Vec<String>,
    /// Carry the call out, then answer 500 instead of its result.
    pub answer_lost: bool,
}

/// A rule with its remaining count.
#[derive(Debug, Clone)]
struct Rule {
    id: u64,
    fault: Fault,
    remaining: FaultCount,
    /// Matching calls still to let through.
    skip: u32,
}

/// Why a rule was not added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FaultError {
    /// Too many rules already.
    #[error("at most {0} fault rules may be active; DELETE /_sim/faults first")]
    TooMany(usize),
    /// `expire_tokens` is an action, not a rule.
    #[error("expire_tokens acts at once and is not kept as a rule")]
    NotARule,
}

/// The active fault rules, in registration order.
#[derive(Debug)]
pub struct FaultBook {
    rules: Vec<Rule>,
    next_id: u64,
    cap: usize,
}

impl FaultBook {
    /// An empty book holding at most `cap` rules.
    pub fn new(cap: usize) -> Self {
        Self {
            rules: Vec::new(),
            next_id: 1,
            cap,
        }
    }

    /// Adds a rule; returns its id.
    pub fn add(&mut self, fault: Fault) -> Result<u64, FaultError> {
        if fault.kind == FaultKind::ExpireTokens {
            return Err(FaultError::NotARule);
        }
        if self.rules.len() >= self.cap {
            return Err(FaultError::TooMany(self.cap));
        }
        let id = self.next_id;
        self.next_id += 1;
        self.rules.push(Rule {
            id,
            remaining: fault.count,
            skip: fault.after,
            fault,
        });
        Ok(id)
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules.clear();
    }

    /// The active rules with their ids and remaining counts.
    pub fn list(&self) -> Vec<(u64, Fault, FaultCount)> {
        self.rules
            .iter()
            .map(|rule| (rule.id, rule.fault.clone(), rule.remaining))
            .collect()
    }

    /// Applies the rules to one call, using up counts: every matching `slow` adds its delay,
    /// every matching `flow_control` adds its ids, and the first matching failure wins.
    pub fn take(&mut self, api: Api, app: Option<&str>) -> Effects {
        let mut effects = Effects::default();
        for rule in &mut self.rules {
            if !rule.fault.matches(api, app) {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            let used = match &rule.fault.kind {
                FaultKind::Slow { ms } => {
                    effects.delay += Duration::from_millis(*ms);
                    true
                }
                FaultKind::FlowControl { user_ids } => {
                    effects.flow_controlled.extend(user_ids.iter().cloned());
                    true
                }
                FaultKind::AnswerLost => {
                    effects.answer_lost = true;
                    true
                }
                failing if effects.failure.is_none() => {
                    effects.failure = Some(match failing {
                        FaultKind::Http500 => InjectedFailure::Http500,
                        FaultKind::SystemError => InjectedFailure::SystemError,
                        FaultKind::Permission60011 => InjectedFailure::Permission,
                        FaultKind::Http429 => InjectedFailure::TooManyRequests,
                        FaultKind::IpBan => InjectedFailure::IpBan,
                        FaultKind::HtmlPage => InjectedFailure::HtmlPage,
                        _ => InjectedFailure::QpsLimit,
                    });
                    true
                }
                _ => false,
            };
            if used {
                if let FaultCount::Times(n) = &mut rule.remaining {
                    *n -= 1;
                }
            }
        }
        self.rules
            .retain(|rule| rule.remaining != FaultCount::Times(0));
        effects
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fault_rules_parse_from_the_control_api_shape() {
        let fault: Fault = serde_json::from_value(json!(
            {"api":"robot.batchSend","app":"dingA","kind":"http_500","count":2}
        ))
        .unwrap();
        assert_eq!(fault.api, Some(Api::RobotBatchSend));
        assert_eq!(fault.kind, FaultKind::Http500);
        assert_eq!(fault.count, FaultCount::Times(2));
        let slow: Fault =
            serde_json::from_value(json!({"kind":"slow","ms":50,"count":"always"})).unwrap();
        assert_eq!(slow.kind, FaultKind::Slow { ms: 50 });
        let flow: Fault =
            serde_json::from_value(json!({"kind":"flow_control","userIds":["user001"]})).unwrap();
        assert_eq!(flow.count, FaultCount::Times(1));
    }

    #[test]
    fn unknown_api_or_kind_or_zero_count_is_refused() {
        for bad in [
            json!({"api":"robot.nope","kind":"http_500"}),
            json!({"kind":"explode"}),
            json!({"kind":"http_500","count":0}),
            json!({"kind":"http_500","count":"forever"}),
        ] {
            assert!(
                serde_json::from_value::<Fault>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_counted_failure_is_used_up() {
        let mut book = FaultBook::new(10);
        book.add(Fault::once(FaultKind::Http500).times(FaultCount::Times(2)))
            .unwrap();
        for _ in 0..2 {
            assert_eq!(
                book.take(Api::GroupSend, Some("a")).failure,
                Some(InjectedFailure::Http500)
            );
        }
        assert_eq!(book.take(Api::GroupSend, Some("a")), Effects::default());
        assert!(book.list().is_empty());
    }

    #[test]
    fn rules_match_only_their_api_and_app() {
        let mut book = FaultBook::new(10);
        book.add(
            Fault::once(FaultKind::SystemError)
                .on(Api::CardUpdate)
                .for_app("dingA")
                .times(FaultCount::Always),
        )
        .unwrap();
        assert_eq!(book.take(Api::CardCreate, Some("dingA")).failure, None);
        assert_eq!(book.take(Api::CardUpdate, Some("dingB")).failure, None);
        assert_eq!(book.take(Api::CardUpdate, None).failure, None);
        assert!(book.take(Api::CardUpdate, Some("dingA")).failure.is_some());
        assert!(book.take(Api::CardUpdate, Some("dingA")).failure.is_some());
    }

    #[test]
    fn flow_control_applies_to_batch_send_only() {
        let mut book = FaultBook::new(10);
        book.add(Fault::once(FaultKind::FlowControl {
            user_ids: vec!["user001".into()],
        }))
        .unwrap();
        assert!(book.take(Api::GroupSend, None).flow_controlled.is_empty());
        assert_eq!(
            book.take(Api::RobotBatchSend, None).flow_controlled,
            vec!["user001".to_owned()]
        );
    }

    #[test]
    fn slow_rules_add_up_and_combine_with_a_failure() {
        let mut book = FaultBook::new(10);
        book.add(Fault::once(FaultKind::Slow { ms: 10 })).unwrap();
        book.add(Fault::once(FaultKind::Slow { ms: 5 })).unwrap();
        book.add(Fault::once(FaultKind::QpsLimit)).unwrap();
        let effects = book.take(Api::UserList, None);
        assert_eq!(effects.delay, Duration::from_millis(15));
        assert_eq!(effects.failure, Some(InjectedFailure::QpsLimit));
    }

    #[test]
    fn the_book_is_bounded_and_expire_tokens_is_not_a_rule() {
        let mut book = FaultBook::new(1);
        assert_eq!(
            book.add(Fault::once(FaultKind::ExpireTokens)),
            Err(FaultError::NotARule)
        );
        book.add(Fault::once(FaultKind::Http500)).unwrap();
        assert_eq!(
            book.add(Fault::once(FaultKind::Http500)),
            Err(FaultError::TooMany(1))
        );
    }
}
