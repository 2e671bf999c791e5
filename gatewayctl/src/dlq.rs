//! `gatewayctl dlq list` and `gatewayctl dlq replay`: dead letters (`DINGTALK_DLQ`,
//! `dingtalk.dlq.{stage}.{integration}`) inspected and sent back to where they came from.
//!
//! Replaying is safe to repeat. Each dead letter is judged on what the gateway recorded:
//!
//! - A **command** (stage `notifier`) is re-run under its own id, so its publisher gets a result
//!   for the id it knows. The notifier never executes a command id twice (it republishes the
//!   stored result), so the replay first forgets the stored *failed* result — and only when the
//!   command's record shows that no DingTalk call of it delivered anything or may have
//!   ([`notifier::records::Records::forget_failed`]). A command recorded as delivered, in
//!   doubt, or running is skipped. Dead letters younger than the results stream's duplicate
//!   window are skipped too: the re-run's result (`Nats-Msg-Id: result:{id}`) would be dropped
//!   as a duplicate of the first one.
//! - An **event** (stage `dispatcher`) is republished under a new event id,
//!   `{id}:replay:{dlq_sequence}`: the dispatcher remembers the original id as settled (it sent
//!   the apology), and its answer commands are derived from the event id. A replay whose answer
//!   the notifier recorded already is skipped, so a second `replay` does not answer twice.
//!
//! Every republished message gets a new `Nats-Msg-Id` and loses the `Dingtalk-*` headers of
//! the dead letter; once JetStream stored it, the dead letter is deleted (a message that fails
//! again comes back as a new dead letter). `--dry-run` reports the same decisions and changes
//! nothing.

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use common::bus::streams::{DLQ, RESULTS};
use common::bus::{dlq_headers, MSG_ID_HEADER};
use futures::StreamExt;
use notifier::records::{Forget, Records};
use time::OffsetDateTime;

/// How long the reader waits for the next dead letter before deciding it has seen them all.
const READ_IDLE: Duration = Duration::from_secs(2);
/// How long one JetStream call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a DLQ operation could not run.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    /// JetStream did not answer or refused.
    #[error("JetStream: {0}")]
    JetStream(String),
    /// Redis did not answer or refused.
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A filter value that cannot be used.
    #[error("{0}")]
    BadFilter(String),
}

fn js_error(err: impl fmt::Display) -> DlqError {
    DlqError::JetStream(err.to_string())
}

/// Which dead letters to act on; every field that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `dispatcher` or `notifier`.
    pub stage: Option<String>,
    /// The integration id.
    pub integration: Option<String>,
    /// Dead-lettered at or after.
    pub since: Option<OffsetDateTime>,
    /// Dead-lettered before.
    pub until: Option<OffsetDateTime>,
    /// The reason's code (the part of `Dingtalk-Reason` before the colon).
    pub reason: Option<String>,
}

impl Filter {
    /// The DLQ subject covering the stage and integration (wildcards for the unset ones).
    pub fn subject(&self) -> Result<String, DlqError> {
        for (what, value) in [("stage", &self.stage), ("integration", &self.integration)] {
            if let Some(value) = value {
                let token_ok = !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !token_ok {
                    return Err(DlqError::BadFilter(format!(
                        "--{what} {value:?}: expected letters, digits, '_' or '-'"
                    )));
                }
            }
        }
        Ok(format!(
            "dingtalk.dlq.{}.{}",
            self.stage.as_deref().unwrap_or("*"),
            self.integration.as_deref().unwrap_or("*")
        ))
    }

    /// Whether a dead letter read from the stream matches the time and reason filters (the
    /// subject filter already chose stage and integration).
    pub fn matches(&self, letter: &DeadLetter) -> bool {
        self.since.is_none_or(|since| letter.time >= since)
            && self.until.is_none_or(|until| letter.time < until)
            && self
                .reason
                .as_deref()
                .is_none_or(|code| letter.reason_code() == code)
    }
}

/// One message of the DLQ stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its sequence in `DINGTALK_DLQ`.
    pub sequence: u64,
    /// When it was dead-lettered.
    pub time: OffsetDateTime,
    /// `dispatcher` or `notifier`.
    pub stage: String,
    /// The integration token of its DLQ subject.
    pub integration: String,
    /// `Dingtalk-Original-Subject`.
    pub original_subject: Option<String>,
    /// `Dingtalk-Reason`.
    pub reason: String,
    /// `Dingtalk-Attempts`.
    pub attempts: Option<u32>,
    /// Every header of the dead letter.
    pub headers: HeaderMap,
    /// The original message, unchanged.
    pub payload: bytes::Bytes,
}

impl DeadLetter {
    /// Builds a dead letter from its DLQ subject, headers and body.
    pub fn new(
        sequence: u64,
        time: OffsetDateTime,
        subject: &str,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Self {
        let mut tokens = subject.splitn(4, '.').skip(2);
        let stage = tokens.next().unwrap_or_default().to_owned();
        let integration = tokens.next().unwrap_or_default().to_owned();
        let header = |name: &str| headers.get(name).map(|value| value.as_str().to_owned());
        Self {
            sequence,
            time,
            stage,
            integration,
            original_subject: header(dlq_headers::ORIGINAL_SUBJECT),
            reason: header(dlq_headers::REASON).unwrap_or_default(),
            attempts: header(dlq_headers::ATTEMPTS).and_then(|a| a.parse().ok()),
            headers,
            payload,
        }
    }

    /// The stable code of the reason (`malformed`, `max_deliveries`, a DingTalk code…).
    pub fn reason_code(&self) -> &str {
        self.reason
            .split_once(':')
            .map_or(self.reason.as_str(), |(code, _)| code)
            .trim()
    }

    /// The `id` field of the body (command id or event id), when it is JSON with one.
    pub fn body_id(&self) -> Option<String> {
        let body: serde_json::Value = serde_json::from_slice(&self.payload).ok()?;
        body.get("id")?.as_str().map(str::to_owned)
    }

    /// One line for `dlq list`.
    pub fn summary(&self) -> String {
        let time = self
            .time
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        format!(
            "#{seq} {time} {stage}/{integration} id={id} subject={subject} attempts={attempts} reason={reason}",
            seq = self.sequence,
            stage = self.stage,
            integration = self.integration,
            id = self.body_id().unwrap_or_else(|| "?".to_owned()),
            subject = self.original_subject.as_deref().unwrap_or("?"),
            attempts = self.attempts.map_or("?".to_owned(), |a| a.to_string()),
            reason = self.reason,
        )
    }
}

/// Reads the dead letters matching `filter`, oldest first, at most `limit`.
pub async fn read(
    js: &Context,
    filter: &Filter,
    limit: usize,
) -> Result<Vec<DeadLetter>, DlqError> {
    let subject = filter.subject()?;
    let mut stream = timed(js.get_stream(DLQ)).await?.map_err(js_error)?;
    let info = timed(stream.info()).await?.map_err(js_error)?;
    if info.state.messages == 0 {
        return Ok(Vec::new());
    }
    let deliver_policy = match filter.since {
        Some(start_time) => DeliverPolicy::ByStartTime { start_time },
        None => DeliverPolicy::All,
    };
    let consumer = timed(stream.create_consumer(OrderedConfig {
        filter_subject: subject,
        deliver_policy,
        ..Default::default()
    }))
    .await?
    .map_err(js_error)?;
    let mut messages = timed(consumer.messages()).await?.map_err(js_error)?;
    let mut letters = Vec::new();
    while letters.len() < limit {
        let Ok(next) = tokio::time::timeout(READ_IDLE, messages.next()).await else {
            break;
        };
        let Some(message) = next else { break };
        let message = message.map_err(js_error)?;
        let info = message.info().map_err(js_error)?;
        let (sequence, time, pending) = (info.stream_sequence, info.published, info.pending);
        let letter = DeadLetter::new(
            sequence,
            time,
            message.subject.as_str(),
            message.headers.clone().unwrap_or_default(),
            message.payload.clone(),
        );
        if filter.until.is_some_and(|until| letter.time >= until) {
            break;
        }
        if filter.matches(&letter) {
            letters.push(letter);
        }
        if pending == 0 {
            break;
        }
    }
    Ok(letters)
}

/// What replay does (or, in a dry run, would do) with one dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Republish `payload` to `subject` with `Nats-Msg-Id: msg_id`.
    Replay {
        /// The original subject.
        subject: String,
        /// The new message id.
        msg_id: String,
        /// The body to publish (an event gets its new id).
        payload: Vec<u8>,
        /// The command whose failed result must be forgotten first (integration, command id).
        forget: Option<(String, String)>,
    },
    /// Left alone, with the reason shown to the operator.
    Skip(String),
}

/// What the notifier recorded about a command, as far as replay cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandRecord {
    /// Nothing recorded (never executed, or the record expired).
    None,
    /// Finished `failed` and nothing of it reached DingTalk: may run again.
    FailedUndelivered,
    /// Something of it was delivered (or the result is not `failed`).
    Delivered,
    /// A DingTalk call of it may have happened (its outcome was never recorded).
    InDoubt,
    /// A notifier replica is executing it right now.
    Running,
}

impl From<Forget> for CommandRecord {
    fn from(found: Forget) -> Self {
        match found {
            Forget::Absent => Self::None,
            Forget::Forgotten | Forget::Forgettable => Self::FailedUndelivered,
            Forget::Delivered => Self::Delivered,
            Forget::InDoubt => Self::InDoubt,
            Forget::Running => Self::Running,
        }
    }
}

/// Decides the fate of one dead letter from what was recorded (pure, for unit tests).
///
/// `record` is the notifier's record of the command itself (commands) or of the replayed
/// event's first answer command (events); `duplicate_window` is the results stream's.
pub fn decide(
    letter: &DeadLetter,
    record: CommandRecord,
    now: OffsetDateTime,
    duplicate_window: Duration,
) -> Verdict {
    let Some(subject) = letter.original_subject.clone() else {
        return Verdict::Skip(format!(
            "no {} header: cannot tell where it came from",
            dlq_headers::ORIGINAL_SUBJECT
        ));
    };
    if subject.starts_with("dingtalk.commands.") {
        let Some(id) = letter.body_id() else {
            // Unreadable: never executed, so nothing can have been delivered.
            return Verdict::Replay {
                subject,
                msg_id: format!("replay:{}", letter.sequence),
                payload: letter.payload.to_vec(),
                forget: None,
            };
        };
        let age = now - letter.time;
        if age < duplicate_window {
            return Verdict::Skip(format!(
                "dead-lettered {}s ago; its new result would fall within the results stream's duplicate window ({}s): replay it later",
                age.whole_seconds(),
                duplicate_window.as_secs()
            ));
        }
        return match record {
            CommandRecord::Delivered => Verdict::Skip(format!("command {id} is recorded as delivered")),
            CommandRecord::InDoubt => Verdict::Skip(format!(
                "command {id} may have reached DingTalk (a call's outcome was never recorded); check by hand"
            )),
            CommandRecord::Running => Verdict::Skip(format!("command {id} is being executed")),
            CommandRecord::None | CommandRecord::FailedUndelivered => {
                let integration = command_integration(&letter.integration, &subject);
                Verdict::Replay {
                    msg_id: format!("replay:{}:{id}", letter.sequence),
                    subject,
                    payload: letter.payload.to_vec(),
                    forget: (record == CommandRecord::FailedUndelivered)
                        .then_some((integration, id)),
                }
            }
        };
    }
    if subject.starts_with("dingtalk.events.") {
        let body: Option<serde_json::Value> = serde_json::from_slice(&letter.payload).ok();
        let Some(mut body) = body.filter(|b| b.get("id").and_then(|id| id.as_str()).is_some())
        else {
            // Never read by the dispatcher, so never answered: republish it as it is.
            return Verdict::Replay {
                subject,
                msg_id: format!("replay:{}", letter.sequence),
                payload: letter.payload.to_vec(),
                forget: None,
            };
        };
        let new_id = replay_event_id(body["id"].as_str().expect("checked above"), letter.sequence);
        return match record {
            CommandRecord::None => {
                body["id"] = serde_json::Value::String(new_id.clone());
                Verdict::Replay {
                    subject,
                    msg_id: new_id,
                    payload: serde_json::to_vec(&body).expect("JSON values serialize"),
                    forget: None,
                }
            }
            _ => Verdict::Skip(format!("event already replayed as {new_id} and answered")),
        };
    }
    Verdict::Skip(format!(
        "{subject} is neither an event nor a command subject"
    ))
}

/// The id a replayed event carries: the original id and the dead letter's sequence, so a
/// second replay of the same dead letter has the same id (and meets the first one's records).
pub fn replay_event_id(original: &str, dlq_sequence: u64) -> String {
    format!("{original}:replay:{dlq_sequence}")
}

/// The integration of a command: its DLQ subject's token (the notifier writes `unknown` when the
/// command's own subject had no valid one, then the original subject's token is the best guess).
fn command_integration(dlq_token: &str, subject: &str) -> String {
    if dlq_token != "unknown" {
        return dlq_token.to_owned();
    }
    common::bus::subjects::split_command(subject).map_or_else(
        || dlq_token.to_owned(),
        |(integration, _)| integration.to_owned(),
    )
}

/// What the notifier recorded about the command `letter` names (or the replayed event's first
/// answer command).
async fn record_of(records: &Records, letter: &DeadLetter) -> Result<CommandRecord, DlqError> {
    let Some(subject) = &letter.original_subject else {
        return Ok(CommandRecord::None);
    };
    let Some(id) = letter.body_id() else {
        return Ok(CommandRecord::None);
    };
    let (integration, command_id) = if subject.starts_with("dingtalk.events.") {
        let replayed = replay_event_id(&id, letter.sequence);
        (
            letter.integration.clone(),
            dispatcher::routing::command_id::reply(&replayed),
        )
    } else {
        (command_integration(&letter.integration, subject), id)
    };
    Ok(records
        .replay_state(&integration, &command_id)
        .await?
        .into())
}

/// The outcome of one dead letter in a replay run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// The dead letter's sequence.
    pub sequence: u64,
    /// What was (or would be) done.
    pub verdict: Verdict,
    /// Whether it was actually republished (false in a dry run, or when the record changed
    /// between the decision and the republish).
    pub published: bool,
}

/// Replays the dead letters matching `filter` (at most `limit`); `dry_run` changes nothing.
pub async fn replay(
    js: &Context,
    records: &Records,
    filter: &Filter,
    limit: usize,
    dry_run: bool,
) -> Result<Vec<Replayed>, DlqError> {
    let letters = read(js, filter, limit).await?;
    let duplicate_window = {
        let mut results = timed(js.get_stream(RESULTS)).await?.map_err(js_error)?;
        timed(results.info())
            .await?
            .map_err(js_error)?
            .config
            .duplicate_window
    };
    let dlq = timed(js.get_stream(DLQ)).await?.map_err(js_error)?;
    let mut outcomes = Vec::with_capacity(letters.len());
    for letter in letters {
        let record = record_of(records, &letter).await?;
        let verdict = decide(&letter, record, OffsetDateTime::now_utc(), duplicate_window);
        let mut published = false;
        if let (
            false,
            Verdict::Replay {
                subject,
                msg_id,
                payload,
                forget,
            },
        ) = (dry_run, &verdict)
        {
            let cleared = match forget {
                Some((integration, id)) => {
                    matches!(
                        records.forget_failed(integration, id).await?,
                        Forget::Forgotten
                    )
                }
                None => true,
            };
            if cleared {
                let headers = republished_headers(&letter.headers, msg_id);
                let ack = timed(js.publish_with_headers(
                    subject.clone(),
                    headers,
                    payload.clone().into(),
                ))
                .await?
                .map_err(js_error)?;
                timed(ack.into_future()).await?.map_err(js_error)?;
                timed(dlq.delete_message(letter.sequence))
                    .await?
                    .map_err(js_error)?;
                published = true;
            }
        }
        outcomes.push(Replayed {
            sequence: letter.sequence,
            verdict,
            published,
        });
    }
    Ok(outcomes)
}

/// The dead letter's headers without the DLQ's own, with the new message id.
pub fn republished_headers(dead_letter: &HeaderMap, msg_id: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, values) in dead_letter.iter() {
        let name: &str = name.as_ref();
        if name.eq_ignore_ascii_case(MSG_ID_HEADER)
            || name.to_ascii_lowercase().starts_with("dingtalk-")
        {
            continue;
        }
        for value in values {
            headers.append(name, value.as_str());
        }
    }
    headers.insert(MSG_ID_HEADER, msg_id);
    headers
}

async fn timed<F: std::future::Future>(future: F) -> Result<F::Output, DlqError> {
    tokio::time::timeout(CALL_TIMEOUT, future)
        .await
        .map_err(|_| DlqError::JetStream(format!("no answer within {CALL_TIMEOUT:?}")))
}

/// Opens JetStream on `NATS_URL` for the command line.
pub async fn connect(nats_url: &str) -> Result<Context, DlqError> {
    let client = common::runtime::connect_nats(nats_url, "gatewayctl")
        .await
        .map_err(js_error)?;
    Ok(jetstream::new(client))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(subject: &str, body: &str, age: Duration) -> DeadLetter {
        let mut headers = HeaderMap::new();
        headers.insert(dlq_headers::ORIGINAL_SUBJECT, subject);
        headers.insert(dlq_headers::REASON, "robot_not_in_group: add the robot");
        headers.insert(dlq_headers::ATTEMPTS, "1");
        headers.insert(MSG_ID_HEADER, "dlq:notifier:c1");
        headers.insert("X-Trace", "t-1");
        DeadLetter::new(
            42,
            OffsetDateTime::now_utc() - age,
            "dingtalk.dlq.notifier.acme",
            headers,
            bytes::Bytes::from(body.to_owned()),
        )
    }

    const HOUR: Duration = Duration::from_secs(3600);
    const WINDOW: Duration = Duration::from_secs(600);

    #[test]
    fn a_failed_command_is_rerun_under_its_own_id_after_forgetting_its_result() {
        let l = letter("dingtalk.commands.acme.send", r#"{"id":"c1"}"#, HOUR);
        assert_eq!(l.reason_code(), "robot_not_in_group");
        let verdict = decide(
            &l,
            CommandRecord::FailedUndelivered,
            OffsetDateTime::now_utc(),
            WINDOW,
        );
        assert_eq!(
            verdict,
            Verdict::Replay {
                subject: "dingtalk.commands.acme.send".into(),
                msg_id: "replay:42:c1".into(),
                payload: br#"{"id":"c1"}"#.to_vec(),
                forget: Some(("acme".into(), "c1".into())),
            }
        );
    }

    #[test]
    fn a_command_recorded_as_delivered_in_doubt_or_running_is_never_resent() {
        let l = letter("dingtalk.commands.acme.send", r#"{"id":"c1"}"#, HOUR);
        for record in [
            CommandRecord::Delivered,
            CommandRecord::InDoubt,
            CommandRecord::Running,
        ] {
            let verdict = decide(&l, record, OffsetDateTime::now_utc(), WINDOW);
            assert!(
                matches!(verdict, Verdict::Skip(_)),
                "{record:?}: {verdict:?}"
            );
        }
    }

    #[test]
    fn a_command_dead_lettered_within_the_duplicate_window_waits() {
        let l = letter(
            "dingtalk.commands.acme.send",
            r#"{"id":"c1"}"#,
            Duration::from_secs(60),
        );
        let Verdict::Skip(why) = decide(
            &l,
            CommandRecord::FailedUndelivered,
            OffsetDateTime::now_utc(),
            WINDOW,
        ) else {
            panic!("replayed inside the window")
        };
        assert!(why.contains("duplicate window"), "{why}");
    }

    #[test]
    fn an_event_is_republished_under_a_replay_id_unless_that_replay_was_answered() {
        let l = letter(
            "dingtalk.events.acme.message",
            r#"{"v":1,"id":"acme:m1","kind":"message"}"#,
            HOUR,
        );
        let Verdict::Replay {
            msg_id,
            payload,
            forget,
            ..
        } = decide(&l, CommandRecord::None, OffsetDateTime::now_utc(), WINDOW)
        else {
            panic!("not replayed")
        };
        assert_eq!(msg_id, "acme:m1:replay:42");
        assert_eq!(forget, None);
        let body: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(body["id"], "acme:m1:replay:42");
        assert_eq!(body["kind"], "message");
        assert!(matches!(
            decide(
                &l,
                CommandRecord::Delivered,
                OffsetDateTime::now_utc(),
                WINDOW
            ),
            Verdict::Skip(_)
        ));
    }

    #[test]
    fn a_dead_letter_without_its_original_subject_is_skipped() {
        let mut l = letter("dingtalk.commands.acme.send", r#"{"id":"c1"}"#, HOUR);
        l.original_subject = None;
        assert!(matches!(
            decide(&l, CommandRecord::None, OffsetDateTime::now_utc(), WINDOW),
            Verdict::Skip(_)
        ));
    }

    #[test]
    fn republished_headers_drop_the_dlq_headers_and_carry_the_new_id() {
        let l = letter("dingtalk.commands.acme.send", r#"{"id":"c1"}"#, HOUR);
        let headers = republished_headers(&l.headers, "replay:42:c1");
        assert_eq!(headers.get(MSG_ID_HEADER).unwrap().as_str(), "replay:42:c1");
        assert_eq!(headers.get("X-Trace").unwrap().as_str(), "t-1");
        assert!(headers.get(dlq_headers::REASON).is_none());
        assert!(headers.get(dlq_headers::ORIGINAL_SUBJECT).is_none());
    }

    #[test]
    fn filters_build_the_subject_and_refuse_wildcards() {
        let filter = Filter {
            stage: Some("notifier".into()),
            ..Filter::default()
        };
        assert_eq!(filter.subject().unwrap(), "dingtalk.dlq.notifier.*");
        let bad = Filter {
            integration: Some("a.>".into()),
            ..Filter::default()
        };
        assert!(bad.subject().is_err());
        let l = letter("dingtalk.commands.acme.send", "{}", HOUR);
        let by_reason = Filter {
            reason: Some("malformed".into()),
            ..Filter::default()
        };
        assert!(!by_reason.matches(&l));
        let since = Filter {
            since: Some(OffsetDateTime::now_utc() - Duration::from_secs(60)),
            ..Filter::default()
        };
        assert!(!since.matches(&l));
    }
}
