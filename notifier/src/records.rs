//! What the notifier remembers in Redis, shared by every replica.
//!
//! | key | type | what |
//! |---|---|---|
//! | `dtg:ntf:cmd:{integration}:{command_id}` | hash | `result` (the final result JSON), `step:{key}` (`pending` before a DingTalk call, its outcome after), `media` (an uploaded media id), `resolved` (the recipients as resolved by the first execution), `waiting_since` (an update or recall: when it first waited for its target, ms), `deferred_since` (when it was first put off, ms) |
//! | `dtg:ntf:lock:{integration}:{command_id}` | string | the replica executing the command (a lease) |
//! | `dtg:ntf:lock:{integration}:order:{target}` | string | the execution (replica and command id) applying an update or recall to `target` (a lease) |
//! | `dtg:ntf:deferred:{integration}:{command_id}` | string | a send that was offered again for later and has not finished (10 minutes after its last deferral at most); updates and recalls of it wait |
//! | `dtg:ntf:sent:{integration}:{command_id}` | string | what a send delivered, for later updates and recalls ([`SentRecord`]) |
//! | `dtg:ntf:order:{integration}:{target}` | string | the stream sequence of the newest update of a target |
//! | `dtg:ntf:union:{integration}:{union_id}` | string | the userId of a unionId (24 h) |
//! | `dtg:ntf:cardcb:{integration}` | string | the card callback URL registered with DingTalk |
//! | `dtg:card:{integration}:{out_track_id}` | string | where a card went, written before it is sent ([`common::cards`]) |
//! | `dtg:chats:{integration}` | hash | chat_id → `{title, last_seen}`, written by the dispatcher |
//!
//! Command records, sent records and update orders live `NOTIFIER_RECORD_RETENTION` (default:
//! the commands stream's max age, `NATS_MAX_AGE`), so a command delivered again at any time
//! within its life in the stream — a publisher's retry, a consumer recreated from the start — is
//! recognised and not executed twice. A finished command that can never be replayed keeps only
//! its `result` (its steps matter while it runs, and for judging whether a failed command may
//! be replayed). BENCHMARKS.md ("Redis per answered message") measures what each key family
//! costs.

use std::time::Duration;

use common::bus::command::{Mentions, Recipient};
use common::bus::query::Chat;
use common::bus::result::{CommandResult, ResultError};
use common::bus::Timestamp;
use common::cards::{CardSpace, SentCard};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

/// How long command records, sent records and update orders are kept unless configured
/// (`NOTIFIER_RECORD_RETENTION`): the default `NATS_MAX_AGE`.
pub const DEFAULT_RECORD_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a resolved unionId is trusted.
pub const UNION_TTL: Duration = Duration::from_secs(24 * 3600);
/// The marker of a step whose DingTalk call started but whose outcome was not recorded.
const PENDING: &str = "pending";

/// How long a deferred send counts as on its way after its last deferral (its next delivery
/// renews it, and deferrals are far shorter).
pub const DEFERRED_MARK: Duration = Duration::from_secs(600);
/// A Redis failure; the command is retried later (nothing is decided without Redis).
pub type RedisResult<T> = Result<T, redis::RedisError>;

/// What a step of a command achieved, as recorded after its DingTalk call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Per recipient index: how it went.
    pub outcomes: Vec<(usize, TargetOutcome)>,
    /// Whatever the step needs to remember besides outcomes (an answer value, e.g. the
    /// per-space results of a card delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// How one recipient fared in one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetOutcome {
    /// Delivered.
    Delivered(Delivered),
    /// Failed.
    Failed(ResultError),
    /// Held back by DingTalk's flow control: retried in a later round.
    FlowControlled,
}

/// How a recipient was reached, which decides how it can be updated or recalled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Delivered {
    /// A 1:1 robot message.
    OneToOne {
        /// The message's processQueryKey.
        process_query_key: String,
    },
    /// A group robot message.
    Group {
        /// The group.
        chat_id: String,
        /// The message's processQueryKey.
        process_query_key: String,
    },
    /// A StandardCard.
    StandardCard {
        /// Its cardBizId.
        card_biz_id: String,
        /// The group, for a group card.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chat_id: Option<String>,
        /// The processQueryKey DingTalk answered with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process_query_key: Option<String>,
    },
    /// A template card instance.
    TemplateCard {
        /// Its outTrackId.
        out_track_id: String,
    },
    /// A custom robot message (no update, no recall exists).
    CustomRobot,
    /// A session webhook reply (no update, no recall exists).
    SessionWebhook,
}

impl Delivered {
    /// Whether an update can change it in place.
    pub fn updatable(&self) -> bool {
        matches!(self, Self::StandardCard { .. } | Self::TemplateCard { .. })
    }
}

/// What a send command delivered, kept for its later updates and recalls.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentRecord {
    /// Whether the send reached at least one recipient.
    pub ok: bool,
    /// The recipients, placeholders filled, in the command's order.
    pub recipients: Vec<Recipient>,
    /// The mentions of the original send (re-used by a degraded resend).
    #[serde(default)]
    pub mentions: Mentions,
    /// Per recipient index reached: how.
    pub delivered: Vec<(usize, Delivered)>,
    /// Per recipient index: its kind and id as sent (unionIds resolved), `None` when it failed
    /// before sending. A degraded update re-sends to these.
    #[serde(default)]
    pub resolved: Vec<Option<(common::bus::command::RecipientType, String)>>,
    /// Set once a recall withdrew it.
    #[serde(default)]
    pub recalled: bool,
}

/// The answer to [`Records::lock_command`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandLock {
    /// The lease is ours: execute.
    Taken,
    /// Another execution holds it.
    Held,
    /// The command has a result: publish that instead.
    Finished,
}

/// What became of a command, as an update or recall of it sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// A send that finished; what it delivered.
    Sent(SentRecord),
    /// Finished, but it is no send (or its record of what it delivered expired).
    NotASend,
    /// Not finished, or never seen.
    NotYet,
}

/// The state of one step.
#[derive(Debug, Clone, PartialEq)]
pub enum StepState {
    /// Never started.
    New,
    /// Started by an execution that did not record the outcome (it may have reached DingTalk).
    InDoubt,
    /// Done.
    Done(StepRecord),
}

/// Handle to the notifier's Redis records. Cheap to clone.
#[derive(Clone)]
pub struct Records {
    redis: ConnectionManager,
    retention: Duration,
}

fn command_key(integration: &str, command_id: &str) -> String {
    format!("dtg:ntf:cmd:{integration}:{command_id}")
}

fn lock_key(integration: &str, command_id: &str) -> String {
    format!("dtg:ntf:lock:{integration}:{command_id}")
}

fn deferred_key(integration: &str, command_id: &str) -> String {
    format!("dtg:ntf:deferred:{integration}:{command_id}")
}

fn sent_key(integration: &str, command_id: &str) -> String {
    format!("dtg:ntf:sent:{integration}:{command_id}")
}

fn order_key(integration: &str, target: &str) -> String {
    format!("dtg:ntf:order:{integration}:{target}")
}

fn union_key(integration: &str, union_id: &str) -> String {
    format!("dtg:ntf:union:{integration}:{union_id}")
}

fn card_callback_key(integration: &str) -> String {
    format!("dtg:ntf:cardcb:{integration}")
}

/// The dispatcher's record of the groups the robot received messages from.
pub fn chats_key(integration: &str) -> String {
    format!("dtg:chats:{integration}")
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Takes a command's lease unless the command has finished: 0 finished, 1 taken, 2 held by
/// another execution.
const LOCK_UNFINISHED: &str = r"
if redis.call('HEXISTS', KEYS[1], 'result') == 1 then return 0 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 2";

/// Deletes a lock only when it is still ours.
const UNLOCK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Extends a lock only when it is still ours.
const EXTEND: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";

/// Raises the newest sequence of a target to ARGV[1] when it is newer; returns the newest.
const NOTE_ORDER: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[1])
if seq > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return seq
end
return current";

impl Records {
    /// Records over the service's Redis connection, kept [`DEFAULT_RECORD_RETENTION`].
    pub fn new(redis: ConnectionManager) -> Self {
        Self {
            redis,
            retention: DEFAULT_RECORD_RETENTION,
        }
    }

    /// Keeps what is recorded from now on for `retention` instead.
    pub fn with_retention(self, retention: Duration) -> Self {
        Self { retention, ..self }
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.clone()
    }

    /// The final result of a command already executed: `None` when it was not, `Some(Err)` with
    /// the parse error when its stored result cannot be read.
    pub async fn result(
        &self,
        integration: &str,
        command_id: &str,
    ) -> RedisResult<Option<Result<CommandResult, serde_json::Error>>> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(command_key(integration, command_id))
            .arg("result")
            .query_async(&mut self.conn())
            .await?;
        Ok(json.map(|json| serde_json::from_str(&json)))
    }

    /// Takes the lease `name` for `lease` (not a command's: [`Records::lock_command`] takes
    /// those); `false` when another execution holds it.
    pub async fn lock(
        &self,
        integration: &str,
        name: &str,
        owner: &str,
        lease: Duration,
    ) -> RedisResult<bool> {
        let set: Option<String> = redis::cmd("SET")
            .arg(lock_key(integration, name))
            .arg(owner)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms(lease))
            .query_async(&mut self.conn())
            .await?;
        Ok(set.is_some())
    }

    /// Takes command `command_id`'s lease for `lease` unless it has finished, in one step: an
    /// execution that saw no result, then took the lease only after another execution had
    /// finished and let it go, would run the command a second time (a finished send keeps no
    /// steps to tell it what was delivered).
    pub async fn lock_command(
        &self,
        integration: &str,
        command_id: &str,
        owner: &str,
        lease: Duration,
    ) -> RedisResult<CommandLock> {
        let answer: i64 = redis::Script::new(LOCK_UNFINISHED)
            .key(command_key(integration, command_id))
            .key(lock_key(integration, command_id))
            .arg(owner)
            .arg(ttl_ms(lease))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match answer {
            0 => CommandLock::Finished,
            1 => CommandLock::Taken,
            _ => CommandLock::Held,
        })
    }

    /// Remembers that card `out_track_id` goes to `spaces`, before it is sent: a press of its
    /// buttons that DingTalk posts unsigned is believed only for such a card
    /// ([`common::cards`]).
    pub async fn remember_card(
        &self,
        integration: &str,
        out_track_id: &str,
        spaces: Vec<CardSpace>,
    ) -> RedisResult<()> {
        let card = SentCard { spaces };
        common::cards::remember(
            &mut self.conn(),
            integration,
            out_track_id,
            &card,
            self.retention,
        )
        .await
    }

    /// Notes that send `command_id` was deferred (offered again later) and has not finished.
    pub async fn mark_deferred(&self, integration: &str, command_id: &str) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(deferred_key(integration, command_id))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms(DEFERRED_MARK))
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// Notes that command `command_id` was put off (the first time: since when, in ms since the
    /// epoch), and keeps its record (its finished steps) alive while it waits.
    pub async fn note_deferral(
        &self,
        integration: &str,
        command_id: &str,
        now_ms: i64,
    ) -> RedisResult<()> {
        self.write_command_field(
            "HSETNX",
            integration,
            command_id,
            "deferred_since",
            &now_ms.to_string(),
        )
        .await
    }

    /// When command `command_id` was first put off (ms since the epoch), if ever.
    pub async fn deferred_since(
        &self,
        integration: &str,
        command_id: &str,
    ) -> RedisResult<Option<i64>> {
        redis::cmd("HGET")
            .arg(command_key(integration, command_id))
            .arg("deferred_since")
            .query_async(&mut self.conn())
            .await
    }

    /// For command `command_id`, waiting for send `target` to finish: whether the target is on
    /// its way (executing under its lease, or deferred) and since when, in ms since the epoch,
    /// `command_id` waits (`now_ms` the first time it asks).
    pub async fn target_wait(
        &self,
        integration: &str,
        target: &str,
        command_id: &str,
        now_ms: i64,
    ) -> RedisResult<(bool, i64)> {
        let key = command_key(integration, command_id);
        let (executing, deferred, since): (bool, bool, i64) = redis::pipe()
            .atomic()
            .cmd("EXISTS")
            .arg(lock_key(integration, target))
            .cmd("EXISTS")
            .arg(deferred_key(integration, target))
            .cmd("HSETNX")
            .arg(&key)
            .arg("waiting_since")
            .arg(now_ms)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms(self.retention))
            .ignore()
            .cmd("HGET")
            .arg(&key)
            .arg("waiting_since")
            .query_async(&mut self.conn())
            .await?;
        Ok((executing || deferred, since))
    }

    /// Extends a lease (a command's, or `order:{target}`) while its holder works.
    pub async fn extend_lock(
        &self,
        integration: &str,
        command_id: &str,
        owner: &str,
        lease: Duration,
    ) -> RedisResult<bool> {
        let extended: i64 = redis::Script::new(EXTEND)
            .key(lock_key(integration, command_id))
            .arg(owner)
            .arg(ttl_ms(lease))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(extended == 1)
    }

    /// Gives the lease back.
    pub async fn unlock(
        &self,
        integration: &str,
        command_id: &str,
        owner: &str,
    ) -> RedisResult<()> {
        let _: i64 = redis::Script::new(UNLOCK)
            .key(lock_key(integration, command_id))
            .arg(owner)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(())
    }

    /// The state of step `step` of a command.
    pub async fn step(
        &self,
        integration: &str,
        command_id: &str,
        step: &str,
    ) -> RedisResult<StepState> {
        let value: Option<String> = redis::cmd("HGET")
            .arg(command_key(integration, command_id))
            .arg(format!("step:{step}"))
            .query_async(&mut self.conn())
            .await?;
        Ok(match value.as_deref() {
            None => StepState::New,
            Some(PENDING) => StepState::InDoubt,
            Some(json) => serde_json::from_str(json).map_or(StepState::InDoubt, StepState::Done),
        })
    }

    /// Marks a step as started, before its DingTalk call: if the process dies before
    /// [`Records::finish_step`], the next execution knows the call may have happened.
    pub async fn begin_step(
        &self,
        integration: &str,
        command_id: &str,
        step: &str,
    ) -> RedisResult<()> {
        self.set_command_field(integration, command_id, &format!("step:{step}"), PENDING)
            .await
    }

    /// Records a step's outcome.
    pub async fn finish_step(
        &self,
        integration: &str,
        command_id: &str,
        step: &str,
        record: &StepRecord,
    ) -> RedisResult<()> {
        let json = serde_json::to_string(record).expect("step records serialize");
        redis::cmd("HSET")
            .arg(command_key(integration, command_id))
            .arg(format!("step:{step}"))
            .arg(json)
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// Forgets a started step that certainly did not reach DingTalk (it was throttled before
    /// sending), so the next execution runs it normally.
    pub async fn abandon_step(
        &self,
        integration: &str,
        command_id: &str,
        step: &str,
    ) -> RedisResult<()> {
        redis::cmd("HDEL")
            .arg(command_key(integration, command_id))
            .arg(format!("step:{step}"))
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// A value remembered for a command (e.g. `media`).
    pub async fn command_field(
        &self,
        integration: &str,
        command_id: &str,
        field: &str,
    ) -> RedisResult<Option<String>> {
        redis::cmd("HGET")
            .arg(command_key(integration, command_id))
            .arg(field)
            .query_async(&mut self.conn())
            .await
    }

    /// Remembers a value for a command.
    pub async fn set_command_field(
        &self,
        integration: &str,
        command_id: &str,
        field: &str,
        value: &str,
    ) -> RedisResult<()> {
        self.write_command_field("HSET", integration, command_id, field, value)
            .await
    }

    /// `HSET` (or `HSETNX`) a field of a command's record, keeping the record for the
    /// retention from now.
    async fn write_command_field(
        &self,
        write: &str,
        integration: &str,
        command_id: &str,
        field: &str,
        value: &str,
    ) -> RedisResult<()> {
        let key = command_key(integration, command_id);
        redis::pipe()
            .atomic()
            .cmd(write)
            .arg(&key)
            .arg(field)
            .arg(value)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms(self.retention))
            .ignore()
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// Stores the final result (and, for a send, what it delivered) in one transaction: from
    /// here on the command is never executed again, only its result re-published. A command
    /// that can never be replayed keeps nothing but its result: its steps could only serve the
    /// judgement of a replay.
    pub async fn finish(
        &self,
        integration: &str,
        result: &CommandResult,
        sent: Option<&SentRecord>,
    ) -> RedisResult<()> {
        let key = command_key(integration, &result.command_id);
        let json = serde_json::to_string(result).expect("results serialize");
        let mut pipe = redis::pipe();
        pipe.atomic();
        if never_replayed(result) {
            pipe.cmd("DEL").arg(&key).ignore();
        }
        pipe.cmd("DEL")
            .arg(deferred_key(integration, &result.command_id))
            .ignore()
            .cmd("HSET")
            .arg(&key)
            .arg("result")
            .arg(json)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl_ms(self.retention))
            .ignore();
        if let Some(sent) = sent {
            pipe.cmd("SET")
                .arg(sent_key(integration, &result.command_id))
                .arg(serde_json::to_string(sent).expect("sent records serialize"))
                .arg("PX")
                .arg(ttl_ms(self.retention))
                .ignore();
        }
        pipe.query_async::<()>(&mut self.conn()).await
    }

    /// Whether command `command_id` finished and, for a send, what it delivered: both read in
    /// one transaction, as [`Records::finish`] writes them in one. (Read one after the other, a
    /// send finishing in between would look like a finished command that is not a send.)
    pub async fn finished(&self, integration: &str, command_id: &str) -> RedisResult<Finished> {
        let (sent, result): (Option<String>, bool) = redis::pipe()
            .atomic()
            .cmd("GET")
            .arg(sent_key(integration, command_id))
            .cmd("HEXISTS")
            .arg(command_key(integration, command_id))
            .arg("result")
            .query_async(&mut self.conn())
            .await?;
        Ok(
            match sent.and_then(|json| serde_json::from_str(&json).ok()) {
                Some(sent) => Finished::Sent(sent),
                None if result => Finished::NotASend,
                None => Finished::NotYet,
            },
        )
    }

    /// Replaces what a send delivered (after a degraded update or a recall).
    pub async fn set_sent(
        &self,
        integration: &str,
        command_id: &str,
        sent: &SentRecord,
    ) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(sent_key(integration, command_id))
            .arg(serde_json::to_string(sent).expect("sent records serialize"))
            .arg("PX")
            .arg(ttl_ms(self.retention))
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// Notes an update of `target` at stream sequence `seq`; returns the newest sequence seen
    /// for that target (≥ `seq`).
    pub async fn note_update(&self, integration: &str, target: &str, seq: u64) -> RedisResult<u64> {
        redis::Script::new(NOTE_ORDER)
            .key(order_key(integration, target))
            .arg(seq)
            .arg(ttl_ms(self.retention))
            .invoke_async(&mut self.conn())
            .await
    }

    /// The userId of a unionId, when resolved within the last day.
    pub async fn union(&self, integration: &str, union_id: &str) -> RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(union_key(integration, union_id))
            .query_async(&mut self.conn())
            .await
    }

    /// Caches a resolved unionId.
    pub async fn set_union(
        &self,
        integration: &str,
        union_id: &str,
        user_id: &str,
    ) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(union_key(integration, union_id))
            .arg(user_id)
            .arg("PX")
            .arg(ttl_ms(UNION_TTL))
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// The card callback URL registered for an integration.
    pub async fn card_callback(&self, integration: &str) -> RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(card_callback_key(integration))
            .query_async(&mut self.conn())
            .await
    }

    /// Remembers the registered card callback URL.
    pub async fn set_card_callback(&self, integration: &str, url: &str) -> RedisResult<()> {
        redis::cmd("SET")
            .arg(card_callback_key(integration))
            .arg(url)
            .query_async::<()>(&mut self.conn())
            .await
    }

    /// The groups the dispatcher saw, most recently active first. Unreadable entries are
    /// skipped with a warning rather than failing the whole list.
    pub async fn chats(&self, integration: &str) -> RedisResult<Vec<Chat>> {
        let entries: Vec<(String, String)> = redis::cmd("HGETALL")
            .arg(chats_key(integration))
            .query_async(&mut self.conn())
            .await?;
        let mut chats: Vec<Chat> = entries
            .into_iter()
            .filter_map(|(chat_id, json)| match parse_chat(&chat_id, &json) {
                Some(chat) => Some(chat),
                None => {
                    tracing::warn!(integration, chat_id, "unreadable chat record skipped");
                    None
                }
            })
            .collect();
        chats.sort_by(|a, b| {
            b.last_seen
                .cmp(&a.last_seen)
                .then_with(|| a.chat_id.cmp(&b.chat_id))
        });
        Ok(chats)
    }
}

/// Whether a finished command may be executed again (`gatewayctl dlq replay`), judged on its
/// records: a command id is never executed twice, so a replay of a failed command must first
/// forget its result — and may only when nothing of it reached DingTalk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forget {
    /// No record (never executed here, or expired after `NOTIFIER_RECORD_RETENTION`).
    Absent,
    /// Finished `failed` without a delivered or in-doubt call: may be forgotten.
    Forgettable,
    /// Forgotten by [`Records::forget_failed`]: the next delivery executes it afresh.
    Forgotten,
    /// A recipient was reached (or the result is not `failed`): never executed again.
    Delivered,
    /// A call's outcome was never recorded, or the record is unreadable or unfinished.
    InDoubt,
    /// An execution holds its lease right now.
    Running,
}

/// Judges a command's record (the fields of `dtg:ntf:cmd:…`, whether its `sent` record says it
/// reached someone, and whether its lease is held) for a replay. Pure, so every case is
/// unit-tested.
pub fn replay_state(
    fields: &std::collections::HashMap<String, String>,
    reached: bool,
    locked: bool,
) -> Forget {
    if locked {
        return Forget::Running;
    }
    if reached {
        return Forget::Delivered;
    }
    if fields.is_empty() {
        return Forget::Absent;
    }
    let mut verdict = match fields.get("result") {
        None => Forget::InDoubt,
        Some(json) => match serde_json::from_str::<CommandResult>(json) {
            Err(_) => Forget::InDoubt,
            Ok(result) if never_replayed(&result) => return Forget::Delivered,
            Ok(_) => Forget::Forgettable,
        },
    };
    for (field, value) in fields {
        if !field.starts_with("step:") {
            continue;
        }
        if value == PENDING {
            verdict = Forget::InDoubt;
            continue;
        }
        match serde_json::from_str::<StepRecord>(value) {
            Ok(step) => {
                if step
                    .outcomes
                    .iter()
                    .any(|(_, outcome)| matches!(outcome, TargetOutcome::Delivered(_)))
                {
                    return Forget::Delivered;
                }
            }
            Err(_) => verdict = Forget::InDoubt,
        }
    }
    verdict
}

/// Whether a finished command can never be replayed, whatever its steps say: any result but
/// `failed`, or a `failed` one with a target that succeeded (it reached someone).
fn never_replayed(result: &CommandResult) -> bool {
    result.status != common::bus::result::Status::Failed
        || result.targets.iter().any(|target| target.ok)
}

/// Deletes a command's record (and its sent record) only if it is still the one judged (same
/// result, same number of fields, same sent record) and no execution holds its lease.
const FORGET: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 'running' end
if redis.call('HGET', KEYS[1], 'result') ~= ARGV[1] then return 'changed' end
if redis.call('HLEN', KEYS[1]) ~= tonumber(ARGV[2]) then return 'changed' end
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[3] then return 'changed' end
redis.call('DEL', KEYS[1], KEYS[3])
return 'forgotten'";

impl Records {
    /// What a replay may do with command `command_id` (read-only; its records read in one
    /// transaction).
    pub async fn replay_state(&self, integration: &str, command_id: &str) -> RedisResult<Forget> {
        Ok(self.replay_snapshot(integration, command_id).await?.0)
    }

    /// The judgement, the command record's fields and the sent record (as read).
    async fn replay_snapshot(
        &self,
        integration: &str,
        command_id: &str,
    ) -> RedisResult<(
        Forget,
        std::collections::HashMap<String, String>,
        Option<String>,
    )> {
        let (fields, sent, locked): (
            std::collections::HashMap<String, String>,
            Option<String>,
            bool,
        ) = redis::pipe()
            .atomic()
            .cmd("HGETALL")
            .arg(command_key(integration, command_id))
            .cmd("GET")
            .arg(sent_key(integration, command_id))
            .cmd("EXISTS")
            .arg(lock_key(integration, command_id))
            .query_async(&mut self.conn())
            .await?;
        // A send keeps its sent record even when it reached no one (a degraded update may
        // still deliver its content); only one that reached someone is never replayed. An
        // unreadable one counts as reached.
        let reached = sent.as_deref().is_some_and(|json| {
            serde_json::from_str::<SentRecord>(json)
                .map_or(true, |sent| sent.ok || !sent.delivered.is_empty())
        });
        Ok((replay_state(&fields, reached, locked), fields, sent))
    }

    /// Forgets the failed result (the failed steps, and the record of a send that reached no
    /// one) of command `command_id` so that its next
    /// delivery executes it again — only when [`replay_state`] finds it forgettable and the
    /// record has not changed since. Returns [`Forget::Forgotten`] on success, else what was
    /// found instead.
    pub async fn forget_failed(&self, integration: &str, command_id: &str) -> RedisResult<Forget> {
        let (state, fields, sent) = self.replay_snapshot(integration, command_id).await?;
        if state != Forget::Forgettable {
            return Ok(state);
        }
        let outcome: String = redis::Script::new(FORGET)
            .key(command_key(integration, command_id))
            .key(lock_key(integration, command_id))
            .key(sent_key(integration, command_id))
            .arg(fields.get("result").map_or("", String::as_str))
            .arg(fields.len())
            .arg(sent.as_deref().unwrap_or_default())
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match outcome.as_str() {
            "forgotten" => Forget::Forgotten,
            "running" => Forget::Running,
            _ => Forget::InDoubt,
        })
    }
}

/// One `dtg:chats:{integration}` entry: `{"title": "…", "last_seen": "<RFC 3339>"}` (a number
/// of milliseconds is accepted for `last_seen` too).
pub fn parse_chat(chat_id: &str, json: &str) -> Option<Chat> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let title = value
        .get("title")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_owned();
    let last_seen = match value.get("last_seen")? {
        serde_json::Value::Number(ms) => Timestamp::from_unix_millis(ms.as_i64()?)?,
        other => serde_json::from_value(other.clone()).ok()?,
    };
    Some(Chat {
        chat_id: chat_id.to_owned(),
        title,
        last_seen,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pairs: &[(&str, String)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    fn result_json(status: &str, ok: bool) -> String {
        serde_json::json!({
            "v": 1, "command_id": "c1", "integration_id": "acme", "op": "send", "status": status,
            "targets": [{"recipient": {"type": "user_id", "id": "u1"}, "ok": ok}],
            "finished_at": "2026-11-25T10:00:00Z"
        })
        .to_string()
    }

    #[test]
    fn only_a_failed_command_that_reached_no_one_may_be_forgotten() {
        let failed_step = serde_json::to_string(&StepRecord {
            outcomes: vec![(
                0,
                TargetOutcome::Failed(ResultError {
                    code: "card_not_delivered".into(),
                    message: "x".into(),
                    retryable: false,
                }),
            )],
            extra: None,
        })
        .unwrap();
        let delivered_step = serde_json::to_string(&StepRecord {
            outcomes: vec![(0, TargetOutcome::Delivered(Delivered::SessionWebhook))],
            extra: None,
        })
        .unwrap();
        let failed = result_json("failed", false);
        assert_eq!(replay_state(&record(&[]), false, false), Forget::Absent);
        assert_eq!(
            replay_state(
                &record(&[("result", failed.clone()), ("step:s0", failed_step)]),
                false,
                false
            ),
            Forget::Forgettable
        );
        assert_eq!(
            replay_state(
                &record(&[("result", failed.clone()), ("step:s1", delivered_step)]),
                false,
                false
            ),
            Forget::Delivered
        );
        assert_eq!(
            replay_state(
                &record(&[("result", failed.clone()), ("step:s1", PENDING.into())]),
                false,
                false
            ),
            Forget::InDoubt
        );
        assert_eq!(
            replay_state(
                &record(&[("result", result_json("ok", true))]),
                false,
                false
            ),
            Forget::Delivered
        );
        assert_eq!(
            replay_state(&record(&[("step:s1", PENDING.into())]), false, false),
            Forget::InDoubt
        );
        assert_eq!(
            replay_state(&record(&[("result", failed.clone())]), true, false),
            Forget::Delivered
        );
        assert_eq!(
            replay_state(&record(&[("result", failed)]), false, true),
            Forget::Running
        );
    }

    #[test]
    fn chat_records_read_rfc3339_or_milliseconds() {
        let chat = parse_chat(
            "cid1",
            r#"{"title":"ops","last_seen":"2026-11-25T10:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(chat.title, "ops");
        assert_eq!(chat.last_seen.to_string(), "2026-11-25T10:00:00Z");
        let chat = parse_chat("cid2", r#"{"title":"x","last_seen":1700000000000}"#).unwrap();
        assert_eq!(chat.last_seen.unix_millis(), 1_700_000_000_000);
        assert!(parse_chat("cid3", "not json").is_none());
    }

    #[test]
    fn outcomes_round_trip_through_json() {
        let record = StepRecord {
            outcomes: vec![
                (
                    0,
                    TargetOutcome::Delivered(Delivered::OneToOne {
                        process_query_key: "k".into(),
                    }),
                ),
                (1, TargetOutcome::FlowControlled),
            ],
            extra: None,
        };
        let json = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<StepRecord>(&json).unwrap(), record);
    }
}
