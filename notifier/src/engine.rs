//! The command engine: one delivered command in, one [`Disposition`] out.
//!
//! The life of a command, in the order the guarantees need:
//!
//! 1. **Read** it; a malformed command (bad JSON, unknown op, a broken rule, a subject that does
//!    not match its body) or an unknown integration is answered at once with a `failed` result
//!    and a dead letter, and acked — no redelivery storm.
//! 2. **Already executed?** The result stored in Redis is published again (JetStream drops the
//!    copy by its `Nats-Msg-Id` `result:{command_id}`) and nothing is sent to DingTalk.
//! 3. **Budget** (fairness): the integration's first API must have a permit now
//!    ([`DingTalk::try_acquire`]); if not, the command is nak'ed with a paced delay
//!    ([`Pacer`]) so its slot serves other tenants meanwhile.
//! 4. **Lease**: one execution at a time per command, across replicas.
//! 5. **Execute** ([`crate::send`], [`crate::update`]): each DingTalk call is a *step* marked
//!    `pending` in Redis before the call and replaced by its outcome after it. A redelivered
//!    command skips finished steps, and a step left `pending` (the process died between the call
//!    and the record) is never blindly repeated: cards are probed, anything else is reported
//!    `failed` with `retryable: true` and code `outcome_unknown`. (`readStatus` cannot help here:
//!    a `processQueryKey` only exists in the answer that was lost, and once an answer is
//!    recorded the step is no longer in doubt.)
//! 6. **Finish**: the result (and what a send delivered) is stored, then published; the worker
//!    acks only after the publish was confirmed.
//!
//! The remaining window for a duplicate is therefore nil for DingTalk calls; for the *result*,
//! it is a redelivery later than the results stream's duplicate window (10 minutes by default)
//! after a publish whose ack was lost — then a second, identical result can appear.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::bus::command::{Command, OpKind, Operation};
use common::bus::result::{CommandResult, ResultError};
use common::bus::{subjects, ContractError, MSG_ID_HEADER};
use common::registry::{ConnectionMode, Integration, IntegrationId, Registry};
use common::secret::Secret;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tracing::Instrument;

use crate::answers;
use crate::dingtalk::{Api, ApiCall, DingTalk, DingTalkError, Target};
use crate::metrics;
use crate::outcome::{self, Subject};
use crate::pacer::Pacer;
use crate::records::{CommandLock, Records, SentRecord};

/// How long an update or recall waits, from its first delivery, for a target send that is
/// neither finished nor on its way (executing or deferred) before failing `unknown_target`.
pub const TARGET_WAIT: Duration = Duration::from_secs(120);
/// Delay before retrying after Redis failed.
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// The settings the engine needs from the service configuration.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// `DINGTALK_OAPI_URL`: the only host session webhooks may point at.
    pub oapi_url: String,
    /// `MEDIA_URL_ALLOWLIST`.
    pub media_url_allowlist: Vec<String>,
    /// `PUBLIC_BASE_URL`.
    pub public_base_url: Option<String>,
    /// How long one execution holds a command's lease; extended every third of it while it
    /// runs. The consumer's ack wait: a crashed execution's lease has expired by the time
    /// JetStream redelivers its command.
    pub lease: Duration,
    /// How long an update or recall waits for a target that is not on its way
    /// ([`TARGET_WAIT`] unless a test shortens it).
    pub target_wait: Duration,
    /// `NOTIFIER_MAX_DEFER`: how long after it was first put off a command is no longer put
    /// off for throttling or an unavailable token; those fail its calls instead.
    pub max_defer: Duration,
    /// `NATS_MAX_AGE`: a command is never put off past nine tenths of it (the stream would drop
    /// it unanswered), however recently it was first deferred.
    pub stream_max_age: Duration,
}

/// One delivery of a command message, as the engine needs it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The subject it was published on.
    pub subject: String,
    /// Its headers.
    pub headers: Option<async_nats::HeaderMap>,
    /// Its body.
    pub payload: Bytes,
    /// Its position in the stream: the order of updates.
    pub stream_sequence: u64,
    /// How many times it was delivered (1 the first time).
    pub delivered: i64,
    /// When it was published.
    pub published: OffsetDateTime,
}

/// What the worker does with a delivery.
#[derive(Debug)]
pub enum Disposition {
    /// Publish this result (a dead letter too when it is a permanent failure), then ack.
    Finished(Box<CommandResult>),
    /// Nak with this delay; the command is executed later.
    Later(Duration),
}

/// An execution cut short: offer the command again after the delay. Nothing in flight is lost:
/// finished steps are recorded, and the step that was cut certainly did not reach DingTalk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Later(pub Duration);

impl From<redis::RedisError> for Later {
    fn from(err: redis::RedisError) -> Self {
        tracing::warn!(%err, "redis failed; the command will be retried");
        Later(REDIS_RETRY)
    }
}

/// The outcome of executing a command: its result and, for a send, what it delivered.
#[derive(Debug)]
pub struct Executed {
    /// The result to store and publish.
    pub result: CommandResult,
    /// What a send delivered (for its later updates and recalls).
    pub sent: Option<SentRecord>,
}

impl Executed {
    /// A command that failed as a whole.
    pub fn failed(subject: &Subject, error: ResultError) -> Self {
        Self {
            result: outcome::failed(subject, error),
            sent: None,
        }
    }
}

/// The command being executed, with its integration.
pub struct Ctx<'a> {
    /// The integration.
    pub integration: &'a Integration,
    /// Its id, as a string (Redis keys).
    pub id: &'a str,
    /// The app, as the client addresses it.
    pub app: Target,
    /// The command's id.
    pub command_id: &'a str,
    /// Its position in the commands stream.
    pub stream_sequence: u64,
    /// When it was published.
    pub published: OffsetDateTime,
    /// Whether throttling may still put it off (see [`Engine::may_defer`]).
    pub may_defer: bool,
}

impl Ctx<'_> {
    /// The integration's `callbackRouteKey`: carried by every card so that button presses find
    /// the integration again (derived from the id, so it needs no configuration).
    pub fn callback_route_key(&self) -> String {
        callback_route_key(self.id)
    }
}

/// The `callbackRouteKey` of an integration.
pub fn callback_route_key(integration: &str) -> String {
    format!("dingtalk-gateway-{integration}")
}

/// The command engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) dingtalk: DingTalk,
    pub(crate) records: Records,
    pub(crate) registry: Registry,
    pub(crate) http: reqwest::Client,
    pub(crate) config: EngineConfig,
    pub(crate) pacer: Pacer,
    /// This replica's name in leases.
    pub(crate) owner: String,
    /// Integrations whose card callback is known to be registered (in-process shortcut).
    pub(crate) registered: Mutex<std::collections::HashSet<String>>,
    /// Whether the "PUBLIC_BASE_URL is unset" warning was given.
    pub(crate) warned_no_public_url: std::sync::atomic::AtomicBool,
}

impl Engine {
    /// An engine over the service's connections.
    pub fn new(
        dingtalk: DingTalk,
        records: Records,
        registry: Registry,
        config: EngineConfig,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(crate::media::FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a plain reqwest client builds");
        Self {
            inner: Arc::new(Inner {
                dingtalk,
                records,
                registry,
                http,
                config,
                pacer: Pacer::new(),
                owner: format!("notifier-{:016x}", rand::random::<u64>()),
                registered: Mutex::new(Default::default()),
                warned_no_public_url: Default::default(),
            }),
        }
    }

    /// Decides what to do with one delivery. Never panics on input; every path ends in a result
    /// or a retry.
    pub async fn handle(&self, incoming: &Incoming) -> Disposition {
        let started = Instant::now();
        let (command, subject) = match read(incoming) {
            Ok(read) => read,
            Err((subject, error)) => {
                metrics::malformed();
                return Disposition::Finished(Box::new(outcome::failed(&subject, error)));
            }
        };
        let span = tracing::info_span!(
            "command",
            command_id = %command.id,
            integration = %command.integration_id,
            op = command.op_kind().as_str(),
        );
        // `instrument`, not `span.enter()`: a guard held across an await is exited on whichever
        // thread the task resumes on, which corrupts the subscriber's span stack (the fault suite
        // caught a worker panicking "tried to clone a span that already closed").
        let disposition = self
            .execute(&command, &subject, incoming)
            .instrument(span)
            .await;
        if let Disposition::Later(_) = &disposition {
            let noted = self
                .inner
                .records
                .note_deferral(
                    command.integration_id.as_str(),
                    &command.id,
                    common::bus::Timestamp::now().unix_millis(),
                )
                .await;
            if let Err(err) = noted {
                tracing::debug!(%err, "cannot note the deferral");
            }
        }
        // Updates and recalls of a send wait for it while it is on its way.
        if let (Disposition::Later(_), Operation::Send(_)) = (&disposition, &command.op) {
            let marked = self
                .inner
                .records
                .mark_deferred(command.integration_id.as_str(), &command.id)
                .await;
            if let Err(err) = marked {
                tracing::debug!(%err, "cannot note the deferred send");
            }
        }
        if let Disposition::Finished(result) = &disposition {
            metrics::command_finished(
                command.op_kind(),
                result.status,
                started.elapsed(),
                incoming.published,
            );
        }
        disposition
    }

    async fn execute(
        &self,
        command: &Command,
        subject: &Subject,
        incoming: &Incoming,
    ) -> Disposition {
        let inner = &self.inner;
        let id = command.integration_id.as_str();
        let integration = match inner
            .registry
            .get_integration(&command.integration_id)
            .await
        {
            Ok(Some(integration)) => integration,
            Ok(None) => {
                return Disposition::Finished(Box::new(outcome::failed(
                    subject,
                    ResultError {
                        code: "unknown_integration".to_owned(),
                        message: format!(
                        "no integration {id} is registered; register it with the admin API first"
                    ),
                        retryable: false,
                    },
                )))
            }
            Err(err) => {
                tracing::warn!(%err, "registry unavailable; the command will be retried");
                return Disposition::Later(REDIS_RETRY);
            }
        };
        if let Some(finished) = self.executed_before(subject).await {
            return finished;
        }
        let ctx = Ctx {
            integration: &integration,
            id,
            app: Target::App(crate::dingtalk::App::from_integration(&integration)),
            command_id: &command.id,
            stream_sequence: incoming.stream_sequence,
            published: incoming.published,
            may_defer: match self.may_defer(id, &command.id, incoming).await {
                Ok(may) => may,
                Err(err) => return Disposition::Later(Later::from(err).0),
            },
        };
        // An update or recall that must wait for its target, or an update already superseded,
        // costs no DingTalk budget: decided before asking for a permit.
        match self.precheck(&ctx, subject, command).await {
            Ok(None) => {}
            Ok(Some(executed)) => {
                return match inner.records.finish(id, &executed.result, None).await {
                    Ok(()) => Disposition::Finished(Box::new(executed.result)),
                    Err(err) => Disposition::Later(Later::from(err).0),
                }
            }
            Err(Later(delay)) => return Disposition::Later(delay),
        }
        let (budget_target, api) = self.first_call(&ctx, command);
        let budget = match ctx.may_defer {
            true => inner.dingtalk.try_acquire(&budget_target, api).await,
            // Too old to wait for budget: its calls take their turn, or fail.
            false => Ok(()),
        };
        if let Err(wait) = budget {
            let key = format!("{}/{api:?}", budget_key(&budget_target));
            let rate = match &budget_target {
                Target::App(app) => app.qps_limit,
                // 20 a minute.
                _ => 1,
            };
            let delay = inner.pacer.defer(&key, wait, rate, Instant::now());
            metrics::deferred(id);
            tracing::debug!(
                delay_ms = delay.as_millis() as u64,
                "budget spent; deferred"
            );
            return Disposition::Later(delay + jitter());
        }
        match inner
            .records
            .lock_command(id, &command.id, &inner.owner, inner.config.lease)
            .await
        {
            Ok(CommandLock::Taken) => {}
            Ok(CommandLock::Held) => return Disposition::Later(inner.config.lease / 4),
            // Finished by another execution since the look above.
            Ok(CommandLock::Finished) => {
                return self
                    .executed_before(subject)
                    .await
                    .unwrap_or(Disposition::Later(Duration::ZERO))
            }
            Err(err) => return Disposition::Later(Later::from(err).0),
        }
        let keeper = self.keep_lease(id, &command.id, &inner.owner);
        let executed = match &command.op {
            Operation::Send(send) => self.execute_send(&ctx, subject, send).await,
            Operation::Update(update) => self.execute_update(&ctx, subject, update).await,
            Operation::Recall(recall) => self.execute_recall(&ctx, subject, recall).await,
        };
        drop(keeper);
        let disposition = match executed {
            Ok(executed) => match inner
                .records
                .finish(id, &executed.result, executed.sent.as_ref())
                .await
            {
                Ok(()) => Disposition::Finished(Box::new(executed.result)),
                Err(err) => Disposition::Later(Later::from(err).0),
            },
            Err(Later(delay)) => Disposition::Later(delay),
        };
        if let Err(err) = inner.records.unlock(id, &command.id, &inner.owner).await {
            tracing::warn!(%err, "cannot release the command lease; it expires by itself");
        }
        disposition
    }

    /// Whether throttling may still put the command off: not once `NOTIFIER_MAX_DEFER` has
    /// passed since it was first put off, nor near the end of its life in the stream. A command
    /// that waited in a backlog without being put off has its whole `NOTIFIER_MAX_DEFER` ahead.
    async fn may_defer(
        &self,
        id: &str,
        command_id: &str,
        incoming: &Incoming,
    ) -> Result<bool, redis::RedisError> {
        let config = &self.inner.config;
        let now = OffsetDateTime::now_utc();
        let stream_life = config.stream_max_age - config.stream_max_age / 10;
        if now - incoming.published >= stream_life {
            return Ok(false);
        }
        // A first delivery was never put off: no need to ask.
        if incoming.delivered <= 1 {
            return Ok(true);
        }
        Ok(
            match self.inner.records.deferred_since(id, command_id).await? {
                Some(since_ms) => {
                    let max_ms = i64::try_from(config.max_defer.as_millis()).unwrap_or(i64::MAX);
                    common::bus::Timestamp::now()
                        .unix_millis()
                        .saturating_sub(since_ms)
                        < max_ms
                }
                None => true,
            },
        )
    }

    /// The result of a command executed before, to be published again; `None`: not executed.
    /// A stored result that cannot be read still means "executed": the command is answered
    /// `result_unreadable` rather than run again (or offered again without end).
    async fn executed_before(&self, subject: &Subject) -> Option<Disposition> {
        let id = subject.integration_id.as_str();
        match self.inner.records.result(id, &subject.command_id).await {
            Ok(Some(Ok(result))) => {
                tracing::info!("already executed; publishing its result again");
                Some(Disposition::Finished(Box::new(result)))
            }
            Ok(Some(Err(err))) => {
                tracing::error!(%err, "already executed, but its stored result cannot be read");
                Some(Disposition::Finished(Box::new(outcome::failed(
                    subject,
                    ResultError {
                        code: "result_unreadable".to_owned(),
                        message: format!(
                            "this command was executed before, but the notifier cannot read its stored result ({err}); it was not executed again — check what it delivered before publishing it again with a new id"
                        ),
                        retryable: false,
                    },
                ))))
            }
            Ok(None) => None,
            Err(err) => Some(Disposition::Later(Later::from(err).0)),
        }
    }

    /// Extends the lease `name` (a command id, or `order:{target}`) held by `holder` while the
    /// work it guards runs (until the guard is dropped).
    pub(crate) fn keep_lease(&self, id: &str, name: &str, holder: &str) -> AbortOnDrop {
        let inner = Arc::clone(&self.inner);
        let (id, name, holder) = (id.to_owned(), name.to_owned(), holder.to_owned());
        AbortOnDrop(tokio::spawn(async move {
            let lease = inner.config.lease;
            loop {
                tokio::time::sleep(lease / 3).await;
                if let Err(err) = inner.records.extend_lock(&id, &name, &holder, lease).await {
                    tracing::warn!(%err, lease = %name, "cannot extend a lease");
                }
            }
        }))
    }

    /// The budget a command needs first: the API of its first DingTalk call.
    fn first_call(&self, ctx: &Ctx<'_>, command: &Command) -> (Target, Api) {
        use common::bus::command::{OutboundMessage, RecipientType};
        match &command.op {
            Operation::Update(_) => (ctx.app.clone(), Api::CardUpdate),
            Operation::Recall(_) => (ctx.app.clone(), Api::BatchRecall),
            Operation::Send(send) => {
                let card = send.updatable
                    || send
                        .mentions
                        .as_ref()
                        .is_some_and(|m| m.all || !m.user_ids.is_empty())
                    || matches!(send.message, OutboundMessage::Interactive { .. });
                let template = matches!(send.message, OutboundMessage::Template { .. });
                let Some(first) = send.recipients.first() else {
                    return (ctx.app.clone(), Api::BatchSend);
                };
                match first.kind {
                    RecipientType::Webhook => (
                        Target::CustomRobot {
                            secret: ctx.integration.custom_robot_secret(&first.id).cloned(),
                            access_token: Secret::new(first.id.clone()),
                        },
                        Api::CustomRobotSend,
                    ),
                    RecipientType::SessionWebhook => (
                        Target::SessionWebhook {
                            url: first.id.clone(),
                        },
                        Api::SessionWebhookSend,
                    ),
                    _ if template => (ctx.app.clone(), Api::CardInstanceCreate),
                    _ if card => (ctx.app.clone(), Api::CardSend),
                    RecipientType::ChatId => (ctx.app.clone(), Api::GroupSend),
                    _ => (ctx.app.clone(), Api::BatchSend),
                }
            }
        }
    }

    /// One DingTalk call of the command `ctx`; a throttle that outlived the client's own
    /// waiting, or a call that could not be sent for want of a token or the limiter, becomes
    /// [`Later`] (nothing was sent) while the command [may defer](Ctx::may_defer), every other
    /// failure a [`ResultError`].
    pub(crate) async fn call(
        &self,
        ctx: &Ctx<'_>,
        target: &Target,
        call: ApiCall,
    ) -> Result<Result<serde_json::Value, CallError>, Later> {
        match self.inner.dingtalk.call(target, call).await {
            Ok(answer) => Ok(Ok(answer)),
            Err(err @ (DingTalkError::Throttled { .. } | DingTalkError::Unavailable { .. }))
                if !ctx.may_defer =>
            {
                tracing::warn!(error = %err, max_defer_s = self.inner.config.max_defer.as_secs(), "deferred for too long; the call fails");
                Ok(Err(CallError::from(err)))
            }
            Err(
                DingTalkError::Throttled {
                    retry_after,
                    detail,
                }
                | DingTalkError::Unavailable {
                    retry_after,
                    detail,
                },
            ) => {
                tracing::info!(%detail, retry_after_ms = retry_after.as_millis() as u64, "not sent now; deferring the command");
                Err(Later(
                    retry_after.max(Duration::from_millis(100)) + jitter(),
                ))
            }
            Err(err) => Ok(Err(CallError::from(err))),
        }
    }

    /// How the integration's cards call back: Stream integrations over their connection, HTTP
    /// ones to `{PUBLIC_BASE_URL}/api/dingtalk/webhook/{id}/card`, registered with DingTalk the
    /// first time a card is sent (once: remembered in Redis). Without `PUBLIC_BASE_URL`, cards
    /// are still sent, with a warning (once) that their buttons cannot reach the gateway.
    pub(crate) async fn card_callback(
        &self,
        ctx: &Ctx<'_>,
    ) -> Result<crate::calls::CallbackType, Later> {
        use crate::calls::CallbackType;
        use std::sync::atomic::Ordering;
        if ctx.integration.connection_mode() == ConnectionMode::Stream {
            return Ok(CallbackType::Stream);
        }
        let inner = &self.inner;
        let Some(base) = &inner.config.public_base_url else {
            if !inner.warned_no_public_url.swap(true, Ordering::Relaxed) {
                tracing::warn!("PUBLIC_BASE_URL is unset: cards are sent, but their button presses cannot reach the gateway");
            }
            return Ok(CallbackType::Unset);
        };
        let url = format!("{base}/api/dingtalk/webhook/{}/card", ctx.id);
        // One registration at a time in this process; Redis remembers it across replicas.
        let mut registered = inner.registered.lock().await;
        if registered.contains(ctx.id) {
            return Ok(CallbackType::Http { url });
        }
        if inner.records.card_callback(ctx.id).await?.as_deref() == Some(url.as_str()) {
            registered.insert(ctx.id.to_owned());
            return Ok(CallbackType::Http { url });
        }
        let call = crate::calls::card_callback_register(&ctx.callback_route_key(), &url);
        match self.call(ctx, &ctx.app, call).await? {
            Ok(_) => {
                inner.records.set_card_callback(ctx.id, &url).await?;
                registered.insert(ctx.id.to_owned());
                tracing::info!(%url, "card callback URL registered with DingTalk");
                Ok(CallbackType::Http { url })
            }
            Err(err) => {
                tracing::warn!(error = %err.error.message, "cannot register the card callback URL; StandardCards name it themselves, template cards go without it");
                Ok(CallbackType::Unregistered { url })
            }
        }
    }
}

/// A background task that lives exactly as long as this guard: if the work it accompanies is
/// cancelled (shutdown, a crash in tests), the task stops too instead of keeping a lease or an
/// in-progress signal alive for work nobody does.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A failed call, with DingTalk's classification kept for decisions (probe, expired webhook).
#[derive(Debug, Clone)]
pub struct CallError {
    /// The client's error.
    pub source: DingTalkError,
    /// As a result error.
    pub error: ResultError,
}

impl From<DingTalkError> for CallError {
    fn from(source: DingTalkError) -> Self {
        let error = match &source {
            DingTalkError::Unknown { detail } => ResultError {
                code: "outcome_unknown".to_owned(),
                message: format!(
                    "DingTalk's answer was lost ({detail}); the message may have been delivered, so it was not re-sent — check before publishing it again with a new id"
                ),
                retryable: true,
            },
            other => answers::result_error(other),
        };
        Self { source, error }
    }
}

impl CallError {
    /// Whether DingTalk refused the request itself (so it certainly had no effect).
    pub fn rejected(&self) -> bool {
        matches!(self.source, DingTalkError::Rejected { .. })
    }

    /// Whether the call certainly had no effect: refused (as such, for a permission, the token
    /// or the quota), or never sent (throttled, no token). A server error or a lost answer may
    /// have had one.
    pub fn certainly_unsent(&self) -> bool {
        matches!(
            self.source,
            DingTalkError::Rejected { .. }
                | DingTalkError::Permission { .. }
                | DingTalkError::TokenInvalid { .. }
                | DingTalkError::QuotaExhausted { .. }
                | DingTalkError::Throttled { .. }
                | DingTalkError::Unavailable { .. }
        )
    }
}

/// The limiter bucket label of a target, for pacing (never a secret: custom robots share one).
fn budget_key(target: &Target) -> String {
    match target {
        Target::App(app) => app.integration_id.clone(),
        Target::CustomRobot { .. } => "custom_robot".to_owned(),
        Target::SessionWebhook { .. } => "session_webhook".to_owned(),
    }
}

/// Up to 50 ms, so deferred commands of many replicas do not return in lockstep.
fn jitter() -> Duration {
    Duration::from_millis(rand::random::<u64>() % 50)
}

/// Reads a delivery into a command and the result subject, or the failed result's subject and
/// error when it cannot be executed.
fn read(incoming: &Incoming) -> Result<(Command, Subject), (Subject, ResultError)> {
    let (integration_token, op_token) =
        subjects::split_command(&incoming.subject).unwrap_or(("unknown", "unknown"));
    let header_id = incoming
        .headers
        .as_ref()
        .and_then(|h| h.get(MSG_ID_HEADER))
        .map(|v| v.as_str().to_owned())
        .filter(|id| !id.is_empty());
    let body_id = serde_json::from_slice::<serde_json::Value>(&incoming.payload)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_owned))
        .filter(|id| !id.trim().is_empty() && id.len() <= 128);
    let fallback = Subject {
        command_id: body_id
            .or(header_id)
            .unwrap_or_else(|| format!("seq-{}", incoming.stream_sequence)),
        integration_id: integration_token.to_owned(),
        op: OpKind::parse(op_token),
    };
    let malformed = |message: String| ResultError {
        code: "malformed".to_owned(),
        message,
        retryable: false,
    };
    let command = Command::from_slice(&incoming.payload).map_err(|err| {
        let message = match &err {
            ContractError::Malformed { .. } | ContractError::Invalid { .. } => err.to_string(),
        };
        (
            fallback.clone(),
            malformed(format!("{message}; see docs/bus.md, \"Commands\"")),
        )
    })?;
    let subject = Subject {
        command_id: command.id.clone(),
        integration_id: integration_token.to_owned(),
        op: Some(command.op_kind()),
    };
    if command.integration_id.as_str() != integration_token
        || command.op_kind().as_str() != op_token
    {
        return Err((
            subject,
            malformed(format!(
                "the body says integration {} op {} but it was published on {}; publish it on {}",
                command.integration_id,
                command.op_kind().as_str(),
                incoming.subject,
                subjects::command(&command.integration_id, command.op_kind())
            )),
        ));
    }
    Ok((command, subject))
}

/// Whether an integration token can be used in subjects (the DLQ and results of a command
/// published on a strange subject still need one).
pub fn valid_token(token: &str) -> bool {
    token.parse::<IntegrationId>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(subject: &str, body: &str, msg_id: Option<&str>) -> Incoming {
        let headers = msg_id.map(|id| {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MSG_ID_HEADER, id);
            headers
        });
        Incoming {
            subject: subject.to_owned(),
            headers,
            payload: Bytes::from(body.to_owned()),
            stream_sequence: 7,
            delivered: 1,
            published: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_unreadable_body_takes_its_id_from_the_msg_id_header() {
        let (subject, error) = read(&incoming(
            "dingtalk.commands.acme.send",
            "{not json",
            Some("cmd-9"),
        ))
        .unwrap_err();
        assert_eq!(subject.command_id, "cmd-9");
        assert_eq!(subject.integration_id, "acme");
        assert_eq!(subject.op, Some(OpKind::Send));
        assert_eq!(error.code, "malformed");
        let (subject, _) =
            read(&incoming("dingtalk.commands.acme.delete", "{}", None)).unwrap_err();
        assert_eq!(subject.command_id, "seq-7");
        assert_eq!(subject.op, None);
    }

    #[test]
    fn a_body_for_another_integration_than_its_subject_is_malformed() {
        let body = r#"{"v":1,"id":"c1","integration_id":"other","op":"recall","target":"c0"}"#;
        let (subject, error) =
            read(&incoming("dingtalk.commands.acme.recall", body, Some("c1"))).unwrap_err();
        assert_eq!(subject.command_id, "c1");
        assert!(
            error.message.contains("dingtalk.commands.other.recall"),
            "{}",
            error.message
        );
        assert!(read(&incoming(
            "dingtalk.commands.other.recall",
            body,
            Some("c1")
        ))
        .is_ok());
    }

    #[test]
    fn a_readable_id_in_a_broken_body_wins_over_the_header() {
        let body = r#"{"v":1,"id":"c5","integration_id":"acme","op":"send"}"#;
        let (subject, error) =
            read(&incoming("dingtalk.commands.acme.send", body, Some("h"))).unwrap_err();
        assert_eq!(subject.command_id, "c5");
        assert!(error.message.contains("missing field"), "{}", error.message);
    }
}
