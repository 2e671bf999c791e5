//! Executing `op: update` and `op: recall` against what an earlier send delivered.
//!
//! **Order and supersession.** Updates of one target apply in the order they were published
//! (their stream sequence). Each update notes its sequence as the target's newest
//! (`dtg:ntf:order:…`); an update that finds a newer one noted is `superseded` — it would only
//! be overwritten, and applying it late would move the card backwards. The newest update waits
//! (nak with a short delay) until the target's send has finished, then applies under a
//! per-target lease after checking once more that it is still the newest. Streaming answers that
//! produce many updates therefore cost one card update per burst, not one per token.
//!
//! **The order lease** (`order:{target}`) belongs to one execution and is extended while it
//! runs, so a slow DingTalk call cannot be overtaken by a newer update. Recalls take it too, and
//! both read what the target delivered only once they hold it: a recall and a degraded resend
//! never act on each other's stale copy.

use std::collections::BTreeMap;
use std::time::Duration;

use common::bus::command::{Degrade, Mentions, OutboundMessage, Recall, Update};
use common::bus::result::ResultError;

use crate::answers;
use crate::calls;
use crate::content::Content;
use crate::engine::{Ctx, Engine, Executed, Later};
use crate::outcome::{self, Subject};
use crate::placeholders::{fill_message, Filler};
use crate::plan::Resolved;
use crate::records::{Delivered, Finished, SentRecord, StepRecord, TargetOutcome};
use crate::send::{all, delivered, Outcomes};

/// How soon a waiting update or recall looks again.
const WAIT_POLL: Duration = Duration::from_millis(250);

/// Why the target of an update or recall cannot be used (yet).
enum TargetState {
    /// Finished; here is what it delivered.
    Ready(SentRecord),
    /// Finished without reaching anyone (here is what it tried): nothing to change, but an
    /// update that degrades to a resend can still deliver its content.
    Unreached(SentRecord),
    /// Not finished (or not even consumed) yet: look again later.
    Pending,
    /// It will never be usable.
    Failed(ResultError),
}

impl Engine {
    /// Decides, without a lease or DingTalk budget, the updates and recalls that cannot run
    /// yet (their target's send has not finished: [`Later`]) or at all (superseded, or the
    /// target failed: a result). `Ok(None)`: execute it.
    pub(crate) async fn precheck(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        command: &common::bus::command::Command,
    ) -> Result<Option<Executed>, Later> {
        use common::bus::command::Operation;
        let target = match &command.op {
            Operation::Send(_) => return Ok(None),
            Operation::Update(update) => {
                let newest = self
                    .inner
                    .records
                    .note_update(ctx.id, &update.target, ctx.stream_sequence)
                    .await?;
                if newest > ctx.stream_sequence {
                    return Ok(Some(superseded(subject, newest)));
                }
                &update.target
            }
            Operation::Recall(recall) => &recall.target,
        };
        let resends =
            matches!(&command.op, Operation::Update(u) if u.degrade == Some(Degrade::Resend));
        match self.target(ctx, target).await? {
            TargetState::Ready(_) => Ok(None),
            TargetState::Unreached(_) if resends => Ok(None),
            TargetState::Unreached(_) => Ok(Some(Executed::failed(subject, unreached(target)))),
            TargetState::Pending => Err(Later(WAIT_POLL)),
            TargetState::Failed(error) => Ok(Some(Executed::failed(subject, error))),
        }
    }

    /// The target send's record, or why there is none.
    async fn target(&self, ctx: &Ctx<'_>, target: &str) -> Result<TargetState, Later> {
        match self.inner.records.finished(ctx.id, target).await? {
            Finished::Sent(sent) if sent.ok => return Ok(TargetState::Ready(sent)),
            Finished::Sent(sent) => return Ok(TargetState::Unreached(sent)),
            Finished::NotASend => {
                return Ok(TargetState::Failed(ResultError {
                    code: "not_a_send".to_owned(),
                    message: format!("{target} is not a send that delivered anything; target the id of a send command"),
                    retryable: false,
                }))
            }
            Finished::NotYet => {}
        }
        // A send on its way (executing, or deferred by throttling) is waited for as long as it
        // takes; one the notifier has not seen, for TARGET_WAIT from this command's first wait
        // (not from its publication: after a backlog both may be old).
        let now = common::bus::Timestamp::now().unix_millis();
        let (on_its_way, since) = self
            .inner
            .records
            .target_wait(ctx.id, target, ctx.command_id, now)
            .await?;
        let waited = Duration::from_millis(u64::try_from(now - since).unwrap_or_default());
        if on_its_way || waited < self.inner.config.target_wait {
            return Ok(TargetState::Pending);
        }
        Ok(TargetState::Failed(ResultError {
            code: "unknown_target".to_owned(),
            message: format!(
                "no send {target} finished or was on its way in the {} s this command waited for it; target the id of an earlier send of the same integration",
                self.inner.config.target_wait.as_secs()
            ),
            retryable: false,
        }))
    }

    pub(crate) async fn execute_update(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        update: &Update,
    ) -> Result<Executed, Later> {
        // `precheck` answered a superseded update before it took a lease or budget.
        self.holding_order(
            ctx,
            &update.target,
            self.update_target(ctx, subject, update),
        )
        .await
    }

    /// An update, under its target's order lease: still the newest, and what the target
    /// delivered is read here, so a recall or degraded resend finished meanwhile is seen.
    async fn update_target(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        update: &Update,
    ) -> Result<Executed, Later> {
        let newest = self
            .inner
            .records
            .note_update(ctx.id, &update.target, ctx.stream_sequence)
            .await?;
        if newest > ctx.stream_sequence {
            return Ok(superseded(subject, newest));
        }
        let resend = update.degrade == Some(Degrade::Resend);
        let sent = match self.target(ctx, &update.target).await? {
            TargetState::Ready(sent) => sent,
            TargetState::Unreached(sent) if resend => sent,
            TargetState::Unreached(_) => {
                return Ok(Executed::failed(subject, unreached(&update.target)))
            }
            TargetState::Pending => return Err(Later(WAIT_POLL)),
            TargetState::Failed(error) => return Ok(Executed::failed(subject, error)),
        };
        if sent.recalled {
            return Ok(Executed::failed(
                subject,
                ResultError {
                    code: "target_recalled".to_owned(),
                    message: format!(
                        "the send {} was recalled; send a new message instead",
                        update.target
                    ),
                    retryable: false,
                },
            ));
        }
        let mut filler = Filler::new(update.state.as_ref());
        let message = fill_message(&mut filler, &update.message);
        if let Err(err) = filler.finish() {
            return Ok(Executed::failed(subject, err.result_error()));
        }
        if !resend && sent.delivered.iter().any(|(_, d)| !d.updatable()) {
            return Ok(Executed::failed(subject, ResultError {
                code: "not_updatable".to_owned(),
                message: format!(
                    "the send {} went out as a plain message, which DingTalk cannot change; send with \"updatable\": true, or update with \"degrade\": \"resend\" to recall and send again",
                    update.target
                ),
                retryable: false,
            }));
        }
        if sent.ok {
            self.apply_update(ctx, subject, &update.target, sent, &message)
                .await
        } else {
            self.deliver_instead(ctx, subject, &update.target, sent, &message)
                .await
        }
    }

    /// Runs `work` holding the order lease of `target`: one update or recall of a target at a
    /// time across replicas, so none lands on content a newer one already replaced. The lease
    /// is this execution's own and is extended while `work` runs; a slow DingTalk therefore
    /// cannot let a newer update overtake it mid-call. [`Later`] while another execution holds
    /// it.
    async fn holding_order<T>(
        &self,
        ctx: &Ctx<'_>,
        target: &str,
        work: impl std::future::Future<Output = Result<T, Later>>,
    ) -> Result<T, Later> {
        let records = &self.inner.records;
        let lease = format!("order:{target}");
        let holder = format!("{}:{}", self.inner.owner, ctx.command_id);
        if !records
            .lock(ctx.id, &lease, &holder, self.inner.config.lease)
            .await?
        {
            return Err(Later(WAIT_POLL));
        }
        let keeper = self.keep_lease(ctx.id, &lease, &holder);
        let done = work.await;
        drop(keeper);
        if let Err(err) = records.unlock(ctx.id, &lease, &holder).await {
            tracing::warn!(%err, "cannot release the order lease; it expires by itself");
        }
        done
    }

    async fn apply_update(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        target: &str,
        mut sent: SentRecord,
        message: &OutboundMessage,
    ) -> Result<Executed, Later> {
        let content = Content::new(message, true, None);
        let mut outcomes = Outcomes::new();
        let mut templates: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        let mut plain: Vec<(usize, Delivered)> = Vec::new();
        for (index, delivered) in &sent.delivered {
            match delivered {
                Delivered::StandardCard { card_biz_id, .. } => {
                    let Some(card_data) = content.card_update() else {
                        outcomes.insert(
                            *index,
                            Err(incompatible(
                                "a StandardCard",
                                "text, markdown or interactive",
                            )),
                        );
                        continue;
                    };
                    let key = format!("update:{card_biz_id}");
                    let call = calls::card_update(card_biz_id, &card_data);
                    let record = self
                        .recorded(ctx, &key, |_| async move {
                            Ok(match self.call(ctx, &ctx.app, call).await? {
                                Ok(_) => {
                                    all(&[*index], TargetOutcome::Delivered(delivered.clone()))
                                }
                                Err(err) => all(&[*index], TargetOutcome::Failed(err.error)),
                            })
                        })
                        .await?;
                    merge(record, &mut outcomes);
                }
                Delivered::TemplateCard { out_track_id } => {
                    templates
                        .entry(out_track_id.clone())
                        .or_default()
                        .push(*index);
                }
                other => plain.push((*index, other.clone())),
            }
        }
        for (out_track_id, indices) in templates {
            let Content::Template { params, .. } = &content else {
                for index in indices {
                    outcomes.insert(
                        index,
                        Err(incompatible("a template card", "template (its params)")),
                    );
                }
                continue;
            };
            let call = calls::card_instance_update(&out_track_id, params);
            let delivered = Delivered::TemplateCard {
                out_track_id: out_track_id.clone(),
            };
            let record = self
                .recorded(ctx, &format!("update:tpl:{out_track_id}"), |_| async move {
                    Ok(match self.call(ctx, &ctx.app, call).await? {
                        Ok(_) => all(&indices, TargetOutcome::Delivered(delivered)),
                        Err(err) => all(&indices, TargetOutcome::Failed(err.error)),
                    })
                })
                .await?;
            merge(record, &mut outcomes);
        }
        let degraded = !plain.is_empty();
        if degraded {
            let mut recalled = Outcomes::new();
            self.recall_deliveries(ctx, "degrade:", &plain, &mut recalled)
                .await?;
            // A recall that may still succeed later (throttled past NOTIFIER_MAX_DEFER, a server
            // error) leaves the old message standing: sending the new one too would show both.
            // Those recipients fail with the recall's error; the caller may update them again.
            plain.retain(|(index, _)| match recalled.get(index) {
                Some(Err(error)) if error.retryable => {
                    outcomes.insert(*index, Err(error.clone()));
                    false
                }
                _ => true,
            });
            if !plain.is_empty() {
                let resolved: Vec<_> = (0..sent.recipients.len())
                    .map(|i| {
                        plain
                            .iter()
                            .any(|(index, _)| *index == i)
                            .then(|| sent.resolved.get(i).cloned().flatten())
                            .flatten()
                    })
                    .collect();
                let mut resent = Outcomes::new();
                if let Err(error) = self
                    .resend(ctx, message, &resolved, &sent.mentions, &mut resent)
                    .await?
                {
                    for (index, _) in &plain {
                        resent.insert(*index, Err(error.clone()));
                    }
                }
                for (index, outcome) in &resent {
                    outcomes.insert(*index, outcome.clone());
                }
                // Later updates and recalls act on the new messages.
                let replaced = delivered(&resent);
                sent.delivered
                    .retain(|(index, _)| !replaced.iter().any(|(i, _)| i == index));
                sent.delivered.extend(replaced);
                sent.delivered.sort_by_key(|(index, _)| *index);
                self.inner.records.set_sent(ctx.id, target, &sent).await?;
            }
        }
        // Recipients the send never reached are not part of the update.
        let reached: Vec<usize> = sent
            .delivered
            .iter()
            .map(|(i, _)| *i)
            .chain(outcomes.keys().copied())
            .collect();
        let recipients: Vec<_> = sent
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, _)| reached.contains(i))
            .map(|(_, r)| r.clone())
            .collect();
        let renumbered = renumber(&outcomes, &sent, &reached);
        Ok(Executed {
            result: outcome::assemble(subject, &recipients, &renumbered, degraded),
            sent: None,
        })
    }

    /// An update with `degrade: resend` of a send that reached no one (DingTalk refused it, or
    /// it failed for good): there is nothing to change, so the new content goes out as a new
    /// message to the recipients the send meant to reach — otherwise an answer whose first
    /// message failed would be lost although its final version was fine. Later updates and
    /// recalls of the target act on what this delivered.
    async fn deliver_instead(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        target: &str,
        mut sent: SentRecord,
        message: &OutboundMessage,
    ) -> Result<Executed, Later> {
        let mut outcomes = Outcomes::new();
        let resolved = self.resolve(ctx, &sent.recipients, &mut outcomes).await?;
        if let Err(error) = self
            .resend(ctx, message, &resolved, &sent.mentions, &mut outcomes)
            .await?
        {
            return Ok(Executed::failed(subject, error));
        }
        let result = outcome::assemble(subject, &sent.recipients, &outcomes, true);
        sent.delivered = delivered(&outcomes);
        sent.resolved = resolved;
        sent.ok = !sent.delivered.is_empty();
        if sent.ok {
            self.inner.records.set_sent(ctx.id, target, &sent).await?;
        }
        Ok(Executed { result, sent: None })
    }

    /// Sends `message` as a new plain message to the `resolved` recipients (a degraded update's
    /// resend), under step keys of its own; `Err` when its media cannot be had.
    async fn resend(
        &self,
        ctx: &Ctx<'_>,
        message: &OutboundMessage,
        resolved: &[Option<Resolved>],
        mentions: &Mentions,
        outcomes: &mut Outcomes,
    ) -> Result<Result<(), ResultError>, Later> {
        let media_id = match self.media(ctx, message).await? {
            Ok(media_id) => media_id,
            Err(error) => return Ok(Err(error)),
        };
        let content = Content::new(message, false, media_id);
        self.deliver(ctx, "resend:", resolved, &content, mentions, outcomes)
            .await?;
        Ok(Ok(()))
    }

    pub(crate) async fn execute_recall(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        recall: &Recall,
    ) -> Result<Executed, Later> {
        self.holding_order(
            ctx,
            &recall.target,
            self.recall_target(ctx, subject, recall),
        )
        .await
    }

    /// A recall, under its target's order lease (an update's degraded resend replaces the
    /// messages a recall must withdraw).
    async fn recall_target(
        &self,
        ctx: &Ctx<'_>,
        subject: &Subject,
        recall: &Recall,
    ) -> Result<Executed, Later> {
        let mut sent = match self.target(ctx, &recall.target).await? {
            TargetState::Ready(sent) => sent,
            TargetState::Unreached(_) => {
                return Ok(Executed::failed(subject, unreached(&recall.target)))
            }
            TargetState::Pending => return Err(Later(WAIT_POLL)),
            TargetState::Failed(error) => return Ok(Executed::failed(subject, error)),
        };
        let mut outcomes = Outcomes::new();
        self.recall_deliveries(ctx, "", &sent.delivered, &mut outcomes)
            .await?;
        if outcomes.values().any(Result::is_ok) && !sent.recalled {
            sent.recalled = true;
            self.inner
                .records
                .set_sent(ctx.id, &recall.target, &sent)
                .await?;
        }
        let reached: Vec<usize> = sent.delivered.iter().map(|(i, _)| *i).collect();
        let recipients: Vec<_> = sent
            .recipients
            .iter()
            .enumerate()
            .filter(|(i, _)| reached.contains(i))
            .map(|(_, r)| r.clone())
            .collect();
        let renumbered = renumber(&outcomes, &sent, &reached);
        let mut result = outcome::assemble(subject, &recipients, &renumbered, false);
        result.process_query_key = None;
        result.card_biz_id = None;
        Ok(Executed { result, sent: None })
    }

    /// Recalls deliveries: 1:1 messages in one batchRecall, group messages per group, by the
    /// processQueryKeys the send recorded. Template cards, custom robots and session webhooks
    /// have no recall.
    async fn recall_deliveries(
        &self,
        ctx: &Ctx<'_>,
        prefix: &str,
        deliveries: &[(usize, Delivered)],
        outcomes: &mut Outcomes,
    ) -> Result<(), Later> {
        let robot_code = ctx.integration.robot_code().to_owned();
        let mut one_to_one: Vec<(usize, String)> = Vec::new();
        let mut groups: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        for (index, delivered) in deliveries {
            match delivered {
                Delivered::OneToOne { process_query_key }
                | Delivered::StandardCard {
                    chat_id: None,
                    process_query_key: Some(process_query_key),
                    ..
                } => {
                    one_to_one.push((*index, process_query_key.clone()));
                }
                Delivered::Group {
                    chat_id,
                    process_query_key,
                }
                | Delivered::StandardCard {
                    chat_id: Some(chat_id),
                    process_query_key: Some(process_query_key),
                    ..
                } => {
                    groups
                        .entry(chat_id.clone())
                        .or_default()
                        .push((*index, process_query_key.clone()));
                }
                other => {
                    outcomes.insert(
                        *index,
                        Err(ResultError {
                            code: "not_recallable".to_owned(),
                            message: format!(
                                "DingTalk has no recall for a message sent as {}",
                                via(other)
                            ),
                            retryable: false,
                        }),
                    );
                }
            }
        }
        let mut batches: Vec<RecallBatch> = Vec::new();
        if !one_to_one.is_empty() {
            batches.push((format!("{prefix}recall:oto"), None, one_to_one));
        }
        for (chat_id, keys) in groups {
            batches.push((
                format!("{prefix}recall:group:{chat_id}"),
                Some(chat_id),
                keys,
            ));
        }
        for (key, chat_id, entries) in batches {
            let mut unique: Vec<String> = entries.iter().map(|(_, k)| k.clone()).collect();
            unique.sort();
            unique.dedup();
            let call = match &chat_id {
                None => calls::batch_recall(&robot_code, &unique),
                Some(chat_id) => calls::group_recall(&robot_code, chat_id, &unique),
            };
            let entries_ref = &entries;
            let record = self
                .recorded(ctx, &key, |_| async move {
                    let targets: Vec<usize> = entries_ref.iter().map(|(i, _)| *i).collect();
                    let answer = match self.call(ctx, &ctx.app, call).await? {
                        Ok(answer) => answer,
                        Err(err) => return Ok(all(&targets, TargetOutcome::Failed(err.error))),
                    };
                    let failed = answers::recall_failures(&answer);
                    let outcomes = entries_ref
                        .iter()
                        .map(|(index, key)| {
                            let outcome = match failed.get(key) {
                                Some(reason) => TargetOutcome::Failed(ResultError {
                                    code: "recall_failed".to_owned(),
                                    message: format!("DingTalk could not recall it: {reason}"),
                                    retryable: false,
                                }),
                                // Recalled: nothing to record beyond success.
                                None => TargetOutcome::Delivered(Delivered::OneToOne {
                                    process_query_key: key.clone(),
                                }),
                            };
                            (*index, outcome)
                        })
                        .collect();
                    Ok(StepRecord {
                        outcomes,
                        extra: None,
                    })
                })
                .await?;
            merge(record, outcomes);
        }
        Ok(())
    }
}

/// One recall call: its step key, the group (none for 1:1), and (recipient index, key) pairs.
type RecallBatch = (String, Option<String>, Vec<(usize, String)>);

/// An update superseded by a newer one.
/// The error of an update or recall whose target send reached no recipient.
fn unreached(target: &str) -> ResultError {
    ResultError {
        code: "target_failed".to_owned(),
        message: format!(
            "the send {target} reached no recipient, so there is nothing to change; update with \"degrade\": \"resend\" to send the new content instead"
        ),
        retryable: false,
    }
}

fn superseded(subject: &Subject, newest: u64) -> Executed {
    Executed {
        result: outcome::superseded(subject, newest),
        sent: None,
    }
}

fn incompatible(target: &str, allowed: &str) -> ResultError {
    ResultError {
        code: "incompatible_update".to_owned(),
        message: format!("{target} can only be updated with {allowed} content"),
        retryable: false,
    }
}

fn via(delivered: &Delivered) -> &'static str {
    match delivered {
        Delivered::OneToOne { .. } => "a 1:1 robot message",
        Delivered::Group { .. } => "a group robot message",
        Delivered::StandardCard { .. } => "a card without a processQueryKey",
        Delivered::TemplateCard { .. } => "a template card",
        Delivered::CustomRobot => "a custom robot (webhook) message",
        Delivered::SessionWebhook => "a session webhook reply",
    }
}

fn merge(record: StepRecord, outcomes: &mut Outcomes) {
    for (index, outcome) in record.outcomes {
        let outcome = match outcome {
            TargetOutcome::Delivered(delivered) => Ok(delivered),
            TargetOutcome::Failed(error) => Err(error),
            TargetOutcome::FlowControlled => Err(ResultError {
                code: "flowControlledStaffIdList".to_owned(),
                message: "DingTalk's flow control held this recipient back".to_owned(),
                retryable: true,
            }),
        };
        outcomes.insert(index, outcome);
    }
}

/// Outcomes keyed by position among the `reached` recipients (the result lists only those).
fn renumber(outcomes: &Outcomes, sent: &SentRecord, reached: &[usize]) -> Outcomes {
    (0..sent.recipients.len())
        .filter(|i| reached.contains(i))
        .enumerate()
        .filter_map(|(position, index)| outcomes.get(&index).map(|o| (position, o.clone())))
        .collect()
}
