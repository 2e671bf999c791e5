//! Executing `op: send`: fill placeholders, resolve unionIds and session webhooks, upload media,
//! plan ([`crate::plan`]), run each step once ([`Engine::recorded`]), retry flow-controlled ids.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use common::bus::command::{
    MediaSource, Mentions, OutboundMessage, Recipient, RecipientType, Send,
};
use common::bus::result::ResultError;
use common::cards::CardSpace;
use common::secret::Secret;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::answers::{self, BatchAnswer};
use crate::calls::{self, CallbackType};
use crate::content::Content;
use crate::dingtalk::{Api, Target};
use crate::engine::{Ctx, Engine, Executed, Later};
use crate::outcome::{self, Subject};
use crate::placeholders::{fill_mentions, fill_message, fill_recipients, Filler};
use crate::plan::{plan_send, Action, CardReceiver, Resolved, Space, Step, Unique};
use crate::records::{Delivered, SentRecord, StepRecord, StepState, TargetOutcome};
use crate::{media, session_webhook};

/// Rounds of retrying ids DingTalk held back with `flowControlledStaffIdList`, and the wait
/// before each (1 s, 2 s, 4 s; PROTOCOL §6.4 backoff).
const FLOW_CONTROL_ROUNDS: u32 = 3;
/// DingTalk's refusal of a batchSend naming an id it does not know (PROTOCOL §4.2).
const STAFF_NOT_EXISTED: &str = "staffId.notExisted";

/// What a probe learned of a StandardCard whose send may or may not have happened.
enum Probe {
    /// It exists (the probe's answer).
    Exists(Value),
    /// DingTalk does not know it: sending it is safe.
    Absent,
    /// The probe failed without an answer either way.
    Unknown,
}

/// The command-record field holding a command's [`Resolution`].
const RESOLUTION_FIELD: &str = "resolved";

/// The recipients of a command as resolved once: per index its kind and id (unionIds resolved),
/// or `None` with the index's error in `failed`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Resolution {
    resolved: Vec<Option<Resolved>>,
    failed: Vec<(usize, ResultError)>,
}

/// Per recipient index: reached (how) or failed (why).
pub(crate) type Outcomes = BTreeMap<usize, Result<Delivered, ResultError>>;

impl Engine {
    pub(crate) async fn execute_send(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        send: &Send,
    ) -> Result<Executed, Later> {
        let mut filler = Filler::new(send.state.as_ref());
        let recipients = fill_recipients(&mut filler, &send.recipients);
        let mentions = fill_mentions(&mut filler, send.mentions.as_ref());
        let message = fill_message(&mut filler, &send.message);
        if let Err(err) = filler.finish() {
            return Ok(Executed::failed(subject, err.result_error()));
        }
        let mut outcomes = Outcomes::new();
        let resolved = self.resolve(ctx, &recipients, &mut outcomes).await?;
        let media_id = match self.media(ctx, &message).await? {
            Ok(media_id) => media_id,
            Err(error) => return Ok(Executed::failed(subject, error)),
        };
        let as_card = send.updatable || mentions.all || !mentions.user_ids.is_empty();
        let content = Content::new(&message, as_card, media_id);
        self.deliver(ctx, "", &resolved, &content, &mentions, &mut outcomes)
            .await?;
        let result = outcome::assemble(subject, &recipients, &outcomes, false);
        let sent = SentRecord {
            ok: result.status == common::bus::result::Status::Ok,
            recipients,
            mentions,
            delivered: delivered(&outcomes),
            resolved,
            recalled: false,
        };
        Ok(Executed {
            result,
            sent: Some(sent),
        })
    }

    /// Plans and runs the delivery of `content`; step keys start with `prefix` (a degraded
    /// update's resend uses its own prefix so it never collides with the update's other steps).
    pub(crate) async fn deliver(
        &self,
        ctx: &Ctx<'_>,
        prefix: &str,
        resolved: &[Option<Resolved>],
        content: &Content,
        mentions: &Mentions,
        outcomes: &mut Outcomes,
    ) -> Result<(), Later> {
        let plan = plan_send(ctx.command_id, resolved, content, mentions);
        for (index, error) in plan.unsupported {
            outcomes.insert(index, Err(error));
        }
        let has_cards = plan.steps.iter().any(|s| {
            matches!(
                s.action,
                Action::CardSend { .. } | Action::TemplateCard { .. }
            )
        });
        let callback = if has_cards {
            self.card_callback(ctx).await?
        } else {
            CallbackType::Unset
        };
        let mut flow_controlled = Vec::new();
        for step in &plan.steps {
            let record = self
                .run_step(ctx, prefix, step, resolved, &callback)
                .await?;
            collect(record, outcomes, &mut flow_controlled);
        }
        if let Some(message) = content.robot_message() {
            self.retry_flow_controlled(ctx, prefix, resolved, &message, flow_controlled, outcomes)
                .await?;
        }
        Ok(())
    }

    /// Resolves what needs resolving before planning: unionIds (cached in Redis) and the
    /// session webhook host check. Failures are recorded per recipient.
    ///
    /// Once per command: the first complete resolution is stored with the command's records and
    /// every later execution plans from it. Step keys and card ids follow the positions of the
    /// resolved recipients, so a unionId that failed to resolve on one delivery and resolved on
    /// the next would otherwise give finished steps new keys and send them again.
    pub(crate) async fn resolve(
        &self,
        ctx: &Ctx<'_>,
        recipients: &[Recipient],
        outcomes: &mut Outcomes,
    ) -> Result<Vec<Option<Resolved>>, Later> {
        let records = &self.inner.records;
        let stored = records
            .command_field(ctx.id, ctx.command_id, RESOLUTION_FIELD)
            .await?;
        let resolution = match stored.map(|json| serde_json::from_str::<Resolution>(&json)) {
            Some(Ok(resolution)) if resolution.resolved.len() == recipients.len() => resolution,
            stored => {
                if stored.is_some() {
                    tracing::warn!(
                        "the stored resolution of this command is unreadable; resolving again"
                    );
                }
                let resolution = self.resolve_now(ctx, recipients).await?;
                let json = serde_json::to_string(&resolution).expect("resolutions serialize");
                records
                    .set_command_field(ctx.id, ctx.command_id, RESOLUTION_FIELD, &json)
                    .await?;
                resolution
            }
        };
        for (index, error) in resolution.failed {
            outcomes.insert(index, Err(error));
        }
        Ok(resolution.resolved)
    }

    async fn resolve_now(
        &self,
        ctx: &Ctx<'_>,
        recipients: &[Recipient],
    ) -> Result<Resolution, Later> {
        let mut resolution = Resolution::default();
        for (index, recipient) in recipients.iter().enumerate() {
            let entry = match recipient.kind {
                RecipientType::UnionId => match self.union_to_user(ctx, &recipient.id).await? {
                    Ok(user_id) => Some((RecipientType::UserId, user_id)),
                    Err(error) => {
                        resolution.failed.push((index, error));
                        None
                    }
                },
                RecipientType::SessionWebhook => {
                    match session_webhook::check(&recipient.id, &self.inner.config.oapi_url) {
                        Ok(()) => Some((recipient.kind, recipient.id.clone())),
                        Err(error) => {
                            resolution.failed.push((index, error));
                            None
                        }
                    }
                }
                kind => Some((kind, recipient.id.clone())),
            };
            resolution.resolved.push(entry);
        }
        Ok(resolution)
    }

    /// unionId → userId: from the Redis cache, else `getbyunionid`.
    async fn union_to_user(
        &self,
        ctx: &Ctx<'_>,
        union_id: &str,
    ) -> Result<Result<String, ResultError>, Later> {
        let records = &self.inner.records;
        if let Some(user_id) = records.union(ctx.id, union_id).await? {
            return Ok(Ok(user_id));
        }
        match self
            .call(ctx, &ctx.app, calls::get_by_union_id(union_id))
            .await?
        {
            // contact_type 1 (PROTOCOL §5): not an employee; robot messages to its userid do
            // not reach it, and DingTalk would only say "invalid staff id" later.
            Ok(answer) if answer.pointer("/result/contact_type").and_then(Value::as_i64) == Some(1) => {
                Ok(Err(ResultError {
                    code: "external_contact".to_owned(),
                    message: format!(
                        "the unionId {union_id:?} is an external contact of the organization, not an employee: the robot cannot message it directly (answer it in the conversation it started: its session_webhook)"
                    ),
                    retryable: false,
                }))
            }
            Ok(answer) => match answer.pointer("/result/userid").and_then(Value::as_str) {
                Some(user_id) => {
                    records.set_union(ctx.id, union_id, user_id).await?;
                    Ok(Ok(user_id.to_owned()))
                }
                None => Ok(Err(ResultError {
                    code: "unknown_union_id".to_owned(),
                    message: format!("DingTalk returned no userId for the unionId {union_id:?}"),
                    retryable: false,
                })),
            },
            Err(err) if err.rejected() => Ok(Err(ResultError {
                code: "unknown_union_id".to_owned(),
                message: format!(
                    "DingTalk cannot resolve the unionId {union_id:?} in this organization: {}",
                    err.error.message
                ),
                retryable: false,
            })),
            Err(err) => Ok(Err(err.error)),
        }
    }

    /// The media id of a file or image message: given, or uploaded from its `url` (once per
    /// command: the id is remembered). `Ok(None)` for other messages.
    pub(crate) async fn media(
        &self,
        ctx: &Ctx<'_>,
        message: &OutboundMessage,
    ) -> Result<Result<Option<String>, ResultError>, Later> {
        let (kind, source): (&str, &MediaSource) = match message {
            OutboundMessage::File(source) => ("file", source),
            OutboundMessage::Image(source) => ("image", source),
            _ => return Ok(Ok(None)),
        };
        if let Some(media_id) = &source.media_id {
            return Ok(Ok(Some(media_id.clone())));
        }
        let Some(url) = &source.url else {
            return Ok(Ok(None));
        };
        let records = &self.inner.records;
        if let Some(media_id) = records
            .command_field(ctx.id, ctx.command_id, "media")
            .await?
        {
            return Ok(Ok(Some(media_id)));
        }
        let url = match media::allowed(url, &self.inner.config.media_url_allowlist) {
            Ok(url) => url,
            Err(error) => return Ok(Err(error)),
        };
        let fetched = match media::fetch(&self.inner.http, url.clone()).await {
            Ok(fetched) => fetched,
            Err(error) => return Ok(Err(error)),
        };
        let file_name = source
            .name
            .clone()
            .or_else(|| {
                url.path_segments()
                    .and_then(|mut s| s.next_back())
                    .map(str::to_owned)
            })
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| kind.to_owned());
        let call = calls::media_upload(kind, &file_name, &fetched.mime, fetched.bytes);
        match self.call(ctx, &ctx.app, call).await? {
            Ok(answer) => match answer.get("media_id").and_then(Value::as_str) {
                Some(media_id) => {
                    records
                        .set_command_field(ctx.id, ctx.command_id, "media", media_id)
                        .await?;
                    Ok(Ok(Some(media_id.to_owned())))
                }
                None => Ok(Err(ResultError {
                    code: "media_upload_failed".to_owned(),
                    message: "DingTalk's media upload answered without a media_id".to_owned(),
                    retryable: true,
                })),
            },
            Err(err) => Ok(Err(err.error)),
        }
    }

    /// Runs a step once: a finished step's recorded outcome is reused; a new one is marked
    /// `pending`, called and recorded. `run` gets `true` when an earlier execution died inside
    /// this step (the call may have reached DingTalk) and decides what is safe.
    pub(crate) async fn recorded<F, Fut>(
        &self,
        ctx: &Ctx<'_>,
        key: &str,
        run: F,
    ) -> Result<StepRecord, Later>
    where
        F: FnOnce(bool) -> Fut,
        Fut: Future<Output = Result<StepRecord, Later>>,
    {
        let records = &self.inner.records;
        let in_doubt = match records.step(ctx.id, ctx.command_id, key).await? {
            StepState::Done(record) => return Ok(record),
            StepState::InDoubt => {
                tracing::warn!(step = key, "an earlier execution died inside this step");
                true
            }
            StepState::New => false,
        };
        records.begin_step(ctx.id, ctx.command_id, key).await?;
        match run(in_doubt).await {
            Ok(record) => {
                records
                    .finish_step(ctx.id, ctx.command_id, key, &record)
                    .await?;
                Ok(record)
            }
            Err(later) => {
                if !in_doubt {
                    records.abandon_step(ctx.id, ctx.command_id, key).await?;
                }
                Err(later)
            }
        }
    }

    async fn run_step(
        &self,
        ctx: &Ctx<'_>,
        prefix: &str,
        step: &Step,
        resolved: &[Option<Resolved>],
        callback: &CallbackType,
    ) -> Result<StepRecord, Later> {
        let first = step.targets.first().copied().unwrap_or_default();
        let robot_code = ctx.integration.robot_code().to_owned();
        match &step.action {
            Action::BatchSend { user_ids, message } => {
                self.one_to_one(
                    ctx,
                    &format!("{prefix}batch:{first}"),
                    &step.targets,
                    resolved,
                    (user_ids, &|ids| {
                        calls::batch_send(&robot_code, ids, message)
                    }),
                )
                .await
            }
            Action::OpenIdBatchSend { open_ids, message } => {
                self.one_to_one(
                    ctx,
                    &format!("{prefix}open:{first}"),
                    &step.targets,
                    resolved,
                    (open_ids, &|ids| {
                        calls::open_id_batch_send(&robot_code, ids, message)
                    }),
                )
                .await
            }
            Action::GroupSend { chat_id, message } => {
                let key = format!("{prefix}group:{first}");
                let targets = step.targets.clone();
                self.recorded(ctx, &key, |in_doubt| async move {
                    if in_doubt {
                        return Ok(unknown(&targets));
                    }
                    let call = calls::group_send(&robot_code, chat_id, message);
                    Ok(match self.call(ctx, &ctx.app, call).await? {
                        Ok(answer) => all(
                            &targets,
                            TargetOutcome::Delivered(Delivered::Group {
                                chat_id: chat_id.clone(),
                                process_query_key: answers::process_query_key(&answer)
                                    .unwrap_or_default(),
                            }),
                        ),
                        Err(err) => all(&targets, TargetOutcome::Failed(err.error)),
                    })
                })
                .await
            }
            Action::CardSend {
                card_biz_id,
                receiver,
                card_data,
                mentions,
            } => {
                let key = format!("{prefix}card:{card_biz_id}");
                let targets = step.targets.clone();
                let route_key = ctx.callback_route_key();
                self.recorded(ctx, &key, |in_doubt| async move {
                    let chat_id = match receiver {
                        CardReceiver::Group(chat_id) => Some(chat_id.clone()),
                        CardReceiver::User(_) => None,
                    };
                    let delivered = |answer: &Value| {
                        TargetOutcome::Delivered(Delivered::StandardCard {
                            card_biz_id: card_biz_id.clone(),
                            chat_id: chat_id.clone(),
                            process_query_key: answers::process_query_key(answer),
                        })
                    };
                    // A card may be sent again safely only when DingTalk does not know its
                    // cardBizId: probe with an update of the same data first.
                    if in_doubt {
                        match self.probe_card(ctx, card_biz_id, card_data).await? {
                            Probe::Exists(answer) => return Ok(all(&targets, delivered(&answer))),
                            Probe::Absent => {}
                            Probe::Unknown => return Ok(unknown(&targets)),
                        }
                    }
                    let send = || {
                        calls::card_send(
                            &robot_code,
                            card_biz_id,
                            receiver,
                            card_data,
                            mentions,
                            (&route_key, callback),
                        )
                    };
                    let space = match receiver {
                        CardReceiver::User(user) => CardSpace::User(user.clone()),
                        CardReceiver::Group(chat) => CardSpace::Group(chat.clone()),
                    };
                    self.inner
                        .records
                        .remember_card(ctx.id, card_biz_id, vec![space])
                        .await?;
                    let outcome = match self.call(ctx, &ctx.app, send()).await? {
                        Ok(answer) => delivered(&answer),
                        Err(err) if err.rejected() => TargetOutcome::Failed(err.error),
                        // Outcome unknown: the card may exist. Only when DingTalk says it
                        // does not is it sent again; a probe that cannot be made leaves the
                        // outcome unknown (never abandoned, so never re-sent blindly).
                        Err(err) => match self.probe_card(ctx, card_biz_id, card_data).await {
                            Ok(Probe::Exists(answer)) => delivered(&answer),
                            Ok(Probe::Absent) => match self.call(ctx, &ctx.app, send()).await? {
                                Ok(answer) => delivered(&answer),
                                Err(_) => TargetOutcome::Failed(err.error),
                            },
                            Ok(Probe::Unknown) | Err(Later(_)) => TargetOutcome::Failed(err.error),
                        },
                    };
                    Ok(all(&targets, outcome))
                })
                .await
            }
            Action::TemplateCard {
                out_track_id,
                template_id,
                params,
                spaces,
                mentions,
            } => {
                self.template_card(
                    ctx,
                    prefix,
                    &step.targets,
                    out_track_id,
                    template_id,
                    params,
                    spaces,
                    mentions,
                    callback,
                )
                .await
            }
            Action::CustomRobot {
                access_token,
                bodies,
            } => {
                let target = Target::CustomRobot {
                    access_token: Secret::new(access_token.clone()),
                    // Robots the integration lists under `custom_robots` are signed; others
                    // are called unsigned (keyword or IP allow-list security).
                    secret: ctx.integration.custom_robot_secret(access_token).cloned(),
                };
                self.classic(
                    ctx,
                    &format!("{prefix}hook:{first}"),
                    &step.targets,
                    &target,
                    Api::CustomRobotSend,
                    bodies,
                    Delivered::CustomRobot,
                )
                .await
            }
            Action::SessionWebhook { url, bodies } => {
                let target = Target::SessionWebhook { url: url.clone() };
                self.classic(
                    ctx,
                    &format!("{prefix}session:{first}"),
                    &step.targets,
                    &target,
                    Api::SessionWebhookSend,
                    bodies,
                    Delivered::SessionWebhook,
                )
                .await
            }
        }
    }

    /// A batchSend (by userIds or openIds) of `ids` (`call` builds it for any of them): each
    /// id invalid, filtered, flow-controlled or delivered. `targets` may name an id more than
    /// once (listed twice in the command).
    ///
    /// DingTalk may refuse a whole batch for one id it does not know (`staffId.notExisted`,
    /// PROTOCOL §4.2). Nothing was sent then, so each id is sent on its own, and only the
    /// unknown ones fail. Those single sends run within this one recorded step: if the notifier
    /// stops among them, every recipient of the step is `outcome_unknown`, never sent twice.
    async fn one_to_one(
        &self,
        ctx: &Ctx<'_>,
        key: &str,
        targets: &[usize],
        resolved: &[Option<Resolved>],
        (ids, call): (&[String], &BatchCall<'_>),
    ) -> Result<StepRecord, Later> {
        self.recorded(ctx, key, |in_doubt| async move {
            if in_doubt {
                return Ok(unknown(targets));
            }
            let id_of = |target: &usize| resolved[*target].as_ref().map_or("", |(_, id)| id.as_str());
            let answer = match self.call(ctx, &ctx.app, call(ids)).await? {
                Ok(answer) => answer,
                Err(err) if err.rejected() && err.error.code == STAFF_NOT_EXISTED && ids.len() > 1 => {
                    tracing::info!(ids = ids.len(), "DingTalk refused the batch for an unknown id; sending to each id alone");
                    let mut outcomes = Vec::with_capacity(targets.len());
                    // Whether a single send may have reached someone: answered, or its answer
                    // lost. Until one has, the whole step may be put off and run again.
                    let mut maybe_sent = false;
                    for id in ids {
                        let alone = match self.call(ctx, &ctx.app, call(std::slice::from_ref(id))).await {
                            Ok(Ok(answer)) => {
                                maybe_sent = true;
                                let parsed = BatchAnswer::parse(&answer);
                                batch_outcome(&parsed, id)
                            }
                            Ok(Err(err)) => {
                                maybe_sent |= !err.certainly_unsent();
                                TargetOutcome::Failed(err.error)
                            }
                            Err(later) if !maybe_sent => return Err(later),
                            // Some ids may have it: the rest fail (retryable) rather than wait
                            // and have the step, and those ids, sent again.
                            Err(_) => TargetOutcome::Failed(ResultError {
                                code: "throttled".to_owned(),
                                message: "DingTalk throttled this recipient's send after the batch was split for an unknown id; publish it again for this recipient".to_owned(),
                                retryable: true,
                            }),
                        };
                        outcomes.extend(
                            targets
                                .iter()
                                .filter(|target| id_of(target) == id.as_str())
                                .map(|target| (*target, alone.clone())),
                        );
                    }
                    return Ok(StepRecord {
                        outcomes,
                        extra: None,
                    });
                }
                Err(err) => return Ok(all(targets, TargetOutcome::Failed(err.error))),
            };
            let parsed = BatchAnswer::parse(&answer);
            let outcomes = targets
                .iter()
                .map(|target| (*target, batch_outcome(&parsed, id_of(target))))
                .collect();
            Ok(StepRecord {
                outcomes,
                extra: Some(answer),
            })
        })
        .await
    }

    /// Whether a StandardCard exists at DingTalk: an update with the same data succeeds only
    /// then, and DingTalk refuses it when the cardBizId is unknown. Any other failure (a server
    /// error, a lost answer) proves nothing: [`Probe::Unknown`], and the card is not sent again.
    async fn probe_card(
        &self,
        ctx: &Ctx<'_>,
        card_biz_id: &str,
        card_data: &Value,
    ) -> Result<Probe, Later> {
        Ok(
            match self
                .call(ctx, &ctx.app, calls::card_update(card_biz_id, card_data))
                .await?
            {
                Ok(answer) => Probe::Exists(answer),
                Err(err) if err.rejected() => Probe::Absent,
                Err(err) => {
                    tracing::warn!(error = %err.error.message, "cannot tell whether a card exists");
                    Probe::Unknown
                }
            },
        )
    }

    /// A template card: created once (creation is keyed by outTrackId, so it may be repeated; a
    /// repeat DingTalk refuses is checked with an update), then delivered to every space in one
    /// call (not repeated when in doubt).
    #[allow(clippy::too_many_arguments)]
    async fn template_card(
        &self,
        ctx: &Ctx<'_>,
        prefix: &str,
        targets: &[usize],
        out_track_id: &str,
        template_id: &str,
        params: &serde_json::Map<String, Value>,
        spaces: &[Space],
        mentions: &Mentions,
        callback: &CallbackType,
    ) -> Result<StepRecord, Later> {
        let route_key = ctx.callback_route_key();
        let created = self
            .recorded(ctx, &format!("{prefix}tpl:create"), |_| async move {
                let call = calls::card_instance_create(
                    out_track_id,
                    template_id,
                    params,
                    &route_key,
                    callback,
                );
                let created = StepRecord {
                    outcomes: Vec::new(),
                    extra: None,
                };
                Ok(match self.call(ctx, &ctx.app, call).await? {
                    Ok(_) => created,
                    // Refused, perhaps because an earlier attempt created it: the client's retry
                    // after a lost answer, or an execution that stopped after the call. An
                    // update with the same parameters tells whether the card exists.
                    Err(err) if err.rejected() => {
                        let probe = calls::card_instance_update(out_track_id, params);
                        match self.call(ctx, &ctx.app, probe).await? {
                            Ok(_) => created,
                            // No such card: the refusal stands.
                            Err(absent) if absent.rejected() => {
                                all(targets, TargetOutcome::Failed(err.error))
                            }
                            // The probe proves nothing (a server error, throttling): not a
                            // refusal for good, so the probe's own (retryable) error.
                            Err(unknown) => all(targets, TargetOutcome::Failed(unknown.error)),
                        }
                    }
                    Err(err) => all(targets, TargetOutcome::Failed(err.error)),
                })
            })
            .await?;
        if !created.outcomes.is_empty() {
            return Ok(created);
        }
        let robot_code = ctx.integration.robot_code().to_owned();
        self.recorded(
            ctx,
            &format!("{prefix}tpl:deliver"),
            |in_doubt| async move {
                if in_doubt {
                    return Ok(unknown(targets));
                }
                let remembered = spaces
                    .iter()
                    .map(|space| match space {
                        Space::Robot(user) => CardSpace::User(user.clone()),
                        Space::Group(chat) => CardSpace::Group(chat.clone()),
                    })
                    .collect();
                self.inner
                    .records
                    .remember_card(ctx.id, out_track_id, remembered)
                    .await?;
                let call =
                    calls::card_instance_deliver(&robot_code, out_track_id, spaces, mentions);
                let answer = match self.call(ctx, &ctx.app, call).await? {
                    Ok(answer) => answer,
                    Err(err) => return Ok(all(targets, TargetOutcome::Failed(err.error))),
                };
                let results = answers::deliver_results(&answer);
                let outcomes = targets
                    .iter()
                    .zip(spaces)
                    .map(|(target, space)| {
                        let space_id = match space {
                            Space::Group(id) | Space::Robot(id) => id,
                        };
                        let outcome = match results.get(space_id) {
                            Some(None) => TargetOutcome::Delivered(Delivered::TemplateCard {
                                out_track_id: out_track_id.to_owned(),
                            }),
                            Some(Some(message)) => TargetOutcome::Failed(ResultError {
                                code: "card_not_delivered".to_owned(),
                                message: format!(
                                    "DingTalk did not deliver the card to {space_id}: {message}"
                                ),
                                retryable: false,
                            }),
                            None => TargetOutcome::Failed(ResultError {
                                code: "card_not_delivered".to_owned(),
                                message: format!("DingTalk's answer does not mention {space_id}"),
                                retryable: true,
                            }),
                        };
                        (*target, outcome)
                    })
                    .collect();
                Ok(StepRecord {
                    outcomes,
                    extra: None,
                })
            },
        )
        .await
    }

    /// Classic bodies to a custom robot or session webhook, one recorded step per body; the
    /// first failure ends the sequence (the later parts are not sent).
    #[allow(clippy::too_many_arguments)]
    async fn classic(
        &self,
        ctx: &Ctx<'_>,
        key: &str,
        targets: &[usize],
        target: &Target,
        api: Api,
        bodies: &[Value],
        delivered: Delivered,
    ) -> Result<StepRecord, Later> {
        let parts = bodies.len();
        for (part, body) in bodies.iter().enumerate() {
            let reached = &delivered;
            let mut record = self
                .recorded(ctx, &format!("{key}:{part}"), |in_doubt| async move {
                    if in_doubt {
                        return Ok(unknown(targets));
                    }
                    Ok(
                        match self.call(ctx, target, calls::classic(api, body)).await? {
                            // Recorded as a delivery, so a replay knows this part arrived.
                            Ok(_) => all(targets, TargetOutcome::Delivered(reached.clone())),
                            Err(err) => {
                                let mut error = match (api, err.error.code.as_str()) {
                                    (Api::SessionWebhookSend, "300001") => {
                                        session_webhook::expired(&err.error.message)
                                    }
                                    (Api::CustomRobotSend, "310000") => {
                                        security_check_failed(target, err.error)
                                    }
                                    _ => err.error,
                                };
                                if parts > 1 {
                                    error.message =
                                        format!("part {} of {parts}: {}", part + 1, error.message);
                                }
                                all(targets, TargetOutcome::Failed(error))
                            }
                        },
                    )
                })
                .await?;
            let failed = record
                .outcomes
                .iter()
                .any(|(_, outcome)| matches!(outcome, TargetOutcome::Failed(_)));
            if failed {
                if part > 0 {
                    // The first parts arrived: sending the message again would repeat them.
                    for (_, outcome) in &mut record.outcomes {
                        if let TargetOutcome::Failed(error) = outcome {
                            error.message = format!(
                                "{}; parts 1 to {part} were delivered, so publishing the message again would repeat them",
                                error.message
                            );
                            error.retryable = false;
                        }
                    }
                }
                return Ok(record);
            }
        }
        Ok(all(targets, TargetOutcome::Delivered(delivered)))
    }

    /// Sends again, in rounds after 1 s, 2 s and 4 s, to the userIds DingTalk held back; ids
    /// still held back after the last round fail with a retryable error.
    async fn retry_flow_controlled(
        &self,
        ctx: &Ctx<'_>,
        prefix: &str,
        resolved: &[Option<Resolved>],
        message: &crate::content::RobotMessage,
        mut pending: Vec<usize>,
        outcomes: &mut Outcomes,
    ) -> Result<(), Later> {
        let robot_code = ctx.integration.robot_code().to_owned();
        for round in 1..=FLOW_CONTROL_ROUNDS {
            if pending.is_empty() {
                break;
            }
            let mut by_id = Unique::default();
            for target in &pending {
                if let Some((_, id)) = &resolved[*target] {
                    by_id.add(*target, id);
                }
            }
            pending = Vec::new();
            let mut slept = false;
            for (targets, ids) in by_id.chunks() {
                let key = format!("{prefix}batch:{}:r{round}", targets[0]);
                if !slept
                    && self
                        .inner
                        .records
                        .step(ctx.id, ctx.command_id, &key)
                        .await?
                        == StepState::New
                {
                    tokio::time::sleep(Duration::from_secs(1 << (round - 1))).await;
                    slept = true;
                }
                let open = matches!(resolved[targets[0]], Some((RecipientType::OpenId, _)));
                let call = |ids: &[String]| {
                    if open {
                        calls::open_id_batch_send(&robot_code, ids, message)
                    } else {
                        calls::batch_send(&robot_code, ids, message)
                    }
                };
                let record = self
                    .one_to_one(ctx, &key, &targets, resolved, (&ids, &call))
                    .await?;
                collect(record, outcomes, &mut pending);
            }
        }
        for target in pending {
            outcomes.insert(
                target,
                Err(ResultError {
                    code: "flowControlledStaffIdList".to_owned(),
                    message: format!(
                        "DingTalk's flow control held this recipient back {} times; try again later",
                        FLOW_CONTROL_ROUNDS + 1
                    ),
                    retryable: true,
                }),
            );
        }
        Ok(())
    }
}

/// A custom robot's `310000` (security check failed) says which of its checks can have failed
/// for this call: the signature (wrong, or missing when the integration has no secret for the
/// robot), the keyword or the IP allow-list.
fn security_check_failed(target: &Target, error: ResultError) -> ResultError {
    let signed = matches!(
        target,
        Target::CustomRobot {
            secret: Some(_),
            ..
        }
    );
    let hint = if signed {
        "the message was signed with the secret the integration lists for this robot under custom_robots: if DingTalk says the sign does not match, that secret is wrong — copy it again from the robot's security settings"
    } else {
        "the message was sent unsigned, because the integration lists no secret for this robot: if the robot uses signing (加签), add {access_token, secret} to the integration's custom_robots"
    };
    ResultError {
        code: error.code,
        message: format!(
            "the custom robot refused the message at its security check (310000): {}; {hint}; otherwise the robot's keyword is missing from the text or this gateway's IP is not on its allow-list",
            error.message
        ),
        retryable: false,
    }
}

/// The same outcome for every target.
pub(crate) fn all(targets: &[usize], outcome: TargetOutcome) -> StepRecord {
    StepRecord {
        outcomes: targets.iter().map(|t| (*t, outcome.clone())).collect(),
        extra: None,
    }
}

/// The outcome of a step an earlier execution died in, for calls that must not be repeated.
/// Builds a batchSend of some of a step's ids (all of them, or one).
type BatchCall<'a> = dyn Fn(&[String]) -> crate::dingtalk::ApiCall + Sync + 'a;

/// How one id fared in a batchSend's answer.
fn batch_outcome(parsed: &BatchAnswer, id: &str) -> TargetOutcome {
    if let Some(error) = parsed.error_of(id) {
        TargetOutcome::Failed(error)
    } else if parsed.flow_controlled.contains(id) {
        TargetOutcome::FlowControlled
    } else {
        TargetOutcome::Delivered(Delivered::OneToOne {
            process_query_key: parsed.process_query_key.clone().unwrap_or_default(),
        })
    }
}

pub(crate) fn unknown(targets: &[usize]) -> StepRecord {
    all(
        targets,
        TargetOutcome::Failed(ResultError {
            code: "outcome_unknown".to_owned(),
            message: "the notifier stopped during this DingTalk call and cannot tell whether it was delivered; it was not sent again — check before publishing it again with a new id".to_owned(),
            retryable: true,
        }),
    )
}

/// Moves a step's outcomes into the command's, collecting flow-controlled targets.
fn collect(record: StepRecord, outcomes: &mut Outcomes, flow_controlled: &mut Vec<usize>) {
    for (target, outcome) in record.outcomes {
        match outcome {
            TargetOutcome::Delivered(delivered) => {
                outcomes.insert(target, Ok(delivered));
            }
            TargetOutcome::Failed(error) => {
                outcomes.insert(target, Err(error));
            }
            TargetOutcome::FlowControlled => flow_controlled.push(target),
        }
    }
}

/// The reached recipients and how.
pub(crate) fn delivered(outcomes: &Outcomes) -> Vec<(usize, Delivered)> {
    outcomes
        .iter()
        .filter_map(|(i, o)| o.as_ref().ok().map(|d| (*i, d.clone())))
        .collect()
}
