//! The JetStream pull loop and each event's life around its work: order, claim, progress
//! signals, acks, redeliveries and dead letters.
//!
//! One durable pull consumer on `DINGTALK_EVENTS` is shared by every replica (explicit acks,
//! `DISPATCHER_ACK_WAIT`, `DISPATCHER_MAX_DELIVER`). A replica pulls only as many messages as it
//! has free expert slots (`DISPATCHER_CONCURRENCY`), holds at most four times that many, and
//! works on each in its own task ([`JoinSet`]). While a message waits or runs, it sends
//! `AckProgress` every third of the ack wait, so answers may take minutes without a redelivery.
//! On shutdown the loop stops pulling and lets the tasks finish within `SHUTDOWN_TIMEOUT`;
//! what is left is redelivered.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::RawMessageErrorKind;
use async_nats::jetstream::{AckKind, Context, ErrorCode, Message};
use async_nats::HeaderMap;
use common::bus::event::{ConversationType, Event, EventBody};
use common::bus::streams::{self, ProvisionError};
use common::bus::{dlq_headers, subjects, Timestamp, MSG_ID_HEADER};
use common::shutdown::Shutdown;
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::claims::{Claim, ClaimState, Claims};
use crate::dispatch::{Dispatcher, Outcome};
use crate::ordering::{
    queue_key, ChatSeen, FetchLock, Interrupted, Ordering, PullEnd, Registration,
};
use crate::routing::{decide, Decision, Work};

/// Most messages pulled at once.
const MAX_BATCH: usize = 64;
/// How long one pull waits for messages.
const FETCH_EXPIRES: Duration = Duration::from_millis(500);
/// How long the fetch lock outlives a replica that died holding it.
const FETCH_LOCK_TTL: Duration = Duration::from_secs(5);
/// First pause after finding the fetch lock taken; doubled while it stays taken, up to
/// [`LOCK_RETRY_MAX`], so idle replicas do not hammer Redis while one of them waits for messages.
const LOCK_RETRY: Duration = Duration::from_millis(5);
/// Longest pause between two attempts to take the fetch lock.
const LOCK_RETRY_MAX: Duration = Duration::from_millis(40);
/// Backoff after a failed pull or a Redis outage.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between two looks at a conversation's queue (bounds how late a message sees
/// that another replica finished its predecessor).
const TURN_POLL_MAX: Duration = Duration::from_millis(25);
/// Most stream messages one recovery of an interrupted pull reads (the consumer's
/// `max_ack_pending`: no more can be delivered and unsettled).
const MAX_RECOVERY: u64 = 10_000;
/// Delay of a redelivery after a failure of our own dependencies.
const REDELIVERY_DELAY: Duration = Duration::from_secs(2);

/// Consumer settings.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// Durable name.
    pub name: String,
    /// `DISPATCHER_CONCURRENCY`.
    pub concurrency: usize,
    /// `DISPATCHER_ACK_WAIT`.
    pub ack_wait: Duration,
    /// `DISPATCHER_MAX_DELIVER`.
    pub max_deliver: i64,
}

/// Creates (or finds) the shared durable consumer. New consumers start with events published
/// from now on: a first deployment must not answer a week of history.
pub async fn durable(
    jetstream: &Context,
    settings: &ConsumerSettings,
) -> Result<PullConsumer, ProvisionError> {
    let error = |err: &dyn std::fmt::Display| ProvisionError::JetStream {
        stream: streams::EVENTS.to_owned(),
        message: format!("consumer {}: {err}", settings.name),
    };
    let stream = jetstream
        .get_stream(streams::EVENTS)
        .await
        .map_err(|e| error(&e))?;
    stream
        .get_or_create_consumer(
            &settings.name,
            pull::Config {
                durable_name: Some(settings.name.clone()),
                description: Some("dispatcher: messages and card actions to experts".to_owned()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_deliver: settings.max_deliver,
                max_ack_pending: MAX_RECOVERY as i64,
                deliver_policy: DeliverPolicy::New,
                filter_subject: subjects::EVENTS_ALL.to_owned(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| error(&e))
}

/// The pull loop and the state its tasks share.
#[derive(Debug, Clone)]
pub struct Consumer {
    /// The work on one event.
    pub dispatcher: Arc<Dispatcher>,
    /// Claims per event.
    pub claims: Claims,
    /// Turn queues and the fetch lock.
    pub ordering: Ordering,
    /// For dead letters.
    pub jetstream: Context,
    /// Settings.
    pub settings: ConsumerSettings,
}

/// A message ready for its task.
struct Pulled {
    message: Message,
    event: Event,
    work: Work,
    received: Instant,
}

impl Consumer {
    /// Pulls until `shutdown`, then waits at most `drain` for the tasks in flight.
    pub async fn run(self, consumer: PullConsumer, shutdown: Shutdown, drain: Duration) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let in_hand = Arc::new(Semaphore::new(self.settings.concurrency * 4));
        let mut tasks = JoinSet::new();
        let mut lock_retry = LOCK_RETRY;
        while !shutdown.is_triggered() {
            while tasks.try_join_next().is_some() {}
            // Pull only what could start now: a free slot and room in hand.
            let free = tokio::select! {
                () = shutdown.wait() => break,
                free = capacity(&slots, &in_hand) => free,
            };
            let Some(permits) = free else { break };
            let mut handled = 0;
            match self.ordering.lock_fetch(FETCH_LOCK_TTL).await {
                Ok(FetchLock::Taken) => lock_retry = LOCK_RETRY,
                Ok(FetchLock::Interrupted(interrupted)) => {
                    lock_retry = LOCK_RETRY;
                    match self.recover(&consumer, &interrupted).await {
                        Ok(last) => handled = last,
                        Err(err) => {
                            // Pulling now could overtake what the interrupted pull received:
                            // leave the pull open (the lock expires) and try again.
                            tracing::warn!(%err, "cannot recover an interrupted pull; retrying");
                            drop(permits);
                            tokio::time::sleep(ERROR_BACKOFF).await;
                            continue;
                        }
                    }
                }
                Ok(FetchLock::Busy) => {
                    drop(permits);
                    tokio::time::sleep(lock_retry).await;
                    lock_retry = (lock_retry * 2).min(LOCK_RETRY_MAX);
                    continue;
                }
                Err(err) => {
                    tracing::warn!(%err, "cannot take the fetch lock (Redis); retrying");
                    drop(permits);
                    tokio::time::sleep(ERROR_BACKOFF).await;
                    continue;
                }
            }
            let pulled = self
                .pull(
                    &consumer,
                    permits,
                    &slots,
                    &mut tasks,
                    &shutdown,
                    &mut handled,
                )
                .await;
            let end = pulled.as_ref().map_or(PullEnd::Cut, |end| *end);
            if let Err(err) = self.ordering.unlock_fetch(handled, end).await {
                tracing::warn!(%err, "cannot release the fetch lock; it expires by itself");
            }
            if let Err(err) = pulled {
                tracing::warn!(%err, "pull failed; retrying");
                tokio::time::sleep(ERROR_BACKOFF).await;
            }
        }
        let finished =
            common::shutdown::drain(async { while tasks.join_next().await.is_some() {} }, drain)
                .await;
        if !finished {
            tasks.abort_all();
        }
    }

    /// Registers what an interrupted pull received and never registered: the stream's messages
    /// above the cursor up to the consumer's last delivered sequence (see [`crate::ordering`]).
    /// They are redelivered after the ack wait and then find their place held. Returns the last
    /// delivered sequence, the new cursor.
    async fn recover(
        &self,
        consumer: &PullConsumer,
        interrupted: &Interrupted,
    ) -> Result<u64, async_nats::Error> {
        let info = consumer.get_info().await?;
        let last = info.delivered.stream_sequence;
        // Everything at or below the ack floor is settled; never read more than can be pending.
        let first = (interrupted.cursor.max(info.ack_floor.stream_sequence) + 1)
            .max(last.saturating_sub(MAX_RECOVERY) + 1);
        let stream = self.jetstream.get_stream(streams::EVENTS).await?;
        let mut registered = 0;
        for sequence in first..=last {
            let stored = match stream.get_raw_message(sequence).await {
                Ok(stored) => stored,
                Err(err) if no_message(err.kind()) => continue,
                Err(err) => return Err(err.into()),
            };
            // Unreadable or skipped events need no place: their redelivery settles them.
            let Ok(event) = Event::from_slice(&stored.payload) else {
                continue;
            };
            let Ok(Decision::Handle(work)) = decide(&event, Timestamp::now()) else {
                continue;
            };
            let registration = Registration {
                queue: queue_key(&work.key),
                event_id: event.id.clone(),
                sequence,
            };
            self.ordering.register(Some(&registration), None).await?;
            registered += 1;
        }
        crate::metrics::pull_recovered(registered);
        tracing::warn!(
            holder = %interrupted.holder,
            from = first,
            to = last,
            registered,
            "a replica stopped while pulling; registered the events it had received"
        );
        Ok(last)
    }

    /// One pull under the fetch lock: every message is registered in its conversation's queue
    /// before the lock is released, then handed to its task. `handled` ends as the highest
    /// stream sequence received. A pull stopped by `shutdown` (or an error) before its batch
    /// ended is [`PullEnd::Cut`]: messages JetStream delivered to it may be unread.
    async fn pull(
        &self,
        consumer: &PullConsumer,
        mut permits: OwnedSemaphorePermit,
        slots: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        shutdown: &Shutdown,
        handled: &mut u64,
    ) -> Result<PullEnd, async_nats::Error> {
        let mut batch = consumer
            .batch()
            .max_messages(permits.num_permits())
            .expires(FETCH_EXPIRES)
            .messages()
            .await?;
        loop {
            let next = tokio::select! {
                () = shutdown.wait() => return Ok(PullEnd::Cut),
                next = batch.next() => next,
            };
            let Some(message) = next else {
                return Ok(PullEnd::Complete);
            };
            let message = message?;
            let received = Instant::now();
            if let Ok(info) = message.info() {
                *handled = (*handled).max(info.stream_sequence);
            }
            let Some(pulled) = self.prepare(message, received).await else {
                continue;
            };
            let Some(permit) = permits.split(1) else {
                // More messages than asked for cannot happen; leave it for a redelivery.
                continue;
            };
            let this = self.clone();
            let slots = slots.clone();
            let span = tracing::info_span!("event", id = %pulled.event.id, conversation = %pulled.work.key);
            tasks.spawn(
                async move {
                    this.work(pulled, slots).await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }

    /// Reads a message and registers it; `None` when it was settled here (skipped, malformed,
    /// or not registrable).
    async fn prepare(&self, message: Message, received: Instant) -> Option<Pulled> {
        let event = match Event::from_slice(&message.payload) {
            Ok(event) => event,
            Err(err) => {
                let integration = message
                    .subject
                    .as_str()
                    .split('.')
                    .nth(2)
                    .unwrap_or("unknown")
                    .to_owned();
                crate::metrics::event("malformed");
                if self
                    .dead_letter(&message, &integration, "malformed", &err.to_string())
                    .await
                {
                    ack(&message).await;
                }
                return None;
            }
        };
        let decision = match decide(&event, Timestamp::now()) {
            Ok(decision) => decision,
            Err(err) => {
                crate::metrics::event("malformed");
                let integration = event.integration_id.to_string();
                if self
                    .dead_letter(&message, &integration, "malformed", &err.to_string())
                    .await
                {
                    ack(&message).await;
                }
                return None;
            }
        };
        let chat = group_seen(&event);
        let registration = match &decision {
            Decision::Handle(work) => Some(Registration {
                queue: queue_key(&work.key),
                event_id: event.id.clone(),
                sequence: message.info().map(|i| i.stream_sequence).unwrap_or(0),
            }),
            Decision::Skip(_) => None,
        };
        if let Err(err) = self
            .ordering
            .register(registration.as_ref(), chat.as_ref())
            .await
        {
            tracing::warn!(event = %event.id, %err, "cannot register the event (Redis); redelivering");
            nak(&message, REDELIVERY_DELAY).await;
            return None;
        }
        match decision {
            Decision::Skip(reason) => {
                crate::metrics::skipped(reason);
                ack(&message).await;
                None
            }
            Decision::Handle(work) => Some(Pulled {
                message,
                event,
                work: *work,
                received,
            }),
        }
    }

    /// The life of one event after registration.
    async fn work(self, pulled: Pulled, slots: Arc<Semaphore>) {
        let Pulled {
            message,
            event,
            work,
            received,
        } = pulled;
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let queue = queue_key(&work.key);
        let event_id = event.id.as_str();

        match self.claims.state(event_id).await {
            Ok(ClaimState::Done) => {
                crate::metrics::event("duplicate");
                self.settle_done(&message, &queue, event_id).await;
                return;
            }
            Ok(ClaimState::Failed(reason)) => {
                return self.park_failed(&message, &event, &queue, &reason).await;
            }
            Ok(_) => {}
            Err(err) => return self.redeliver(&message, &err.to_string()).await,
        }

        let waited = Instant::now();
        let turn = self.keep_alive(&message, None, self.wait_turn(&queue, event_id));
        if let Err(err) = turn.await {
            return self.redeliver(&message, &err.to_string()).await;
        }
        crate::metrics::order_wait(waited.elapsed());

        // Claimed before waiting for an expert slot: a head that waits for a slot is held, not
        // free, so the stall guard of the messages queued behind it (`wait_turn`) never takes
        // it for lost while every slot is busy with long runs. Someone else held the claim:
        // their run may exist even on a first delivery.
        let mut contested = false;
        loop {
            match self.claims.acquire(event_id).await {
                Ok(Claim::Acquired) => break,
                Ok(Claim::Done) => {
                    crate::metrics::event("duplicate");
                    self.settle_done(&message, &queue, event_id).await;
                    return;
                }
                Ok(Claim::Failed(reason)) => {
                    return self.park_failed(&message, &event, &queue, &reason).await;
                }
                Ok(Claim::Held) => {
                    // Another replica works on this very event (it was redelivered while alive).
                    contested = true;
                    let pause = tokio::time::sleep(TURN_POLL_MAX);
                    self.keep_alive(&message, None, pause).await;
                }
                Err(err) => return self.redeliver(&message, &err.to_string()).await,
            }
        }
        let slot = self
            .keep_alive(&message, Some(event_id), slots.acquire_owned())
            .await;
        let Ok(_slot) = slot else {
            // The slots are never closed; were they, the next delivery would claim the event.
            let _ = self.claims.release(event_id).await;
            return;
        };

        let handled = self
            .dispatcher
            .handle(&event, &work, received, delivered > 1 || contested);
        let outcome = self.keep_alive(&message, Some(event_id), handled).await;
        match outcome {
            Ok(outcome) => {
                let parked = match &outcome {
                    Outcome::Failed(err) => {
                        crate::metrics::event("failed");
                        let detail = err.to_string();
                        // The user has the apology: from now on a delivery only parks it.
                        let reason = format!("{}: {detail}", err.code());
                        if let Err(redis) = self.claims.fail(event_id, &reason).await {
                            tracing::warn!(err = %redis, "cannot mark the event failed; a redelivery could run it again");
                        }
                        self.dead_letter(
                            &message,
                            event.integration_id.as_str(),
                            err.code(),
                            &detail,
                        )
                        .await
                    }
                    Outcome::Answered => {
                        crate::metrics::event("answered");
                        true
                    }
                    Outcome::Reset => {
                        crate::metrics::event("reset");
                        true
                    }
                    Outcome::Unrouted => {
                        crate::metrics::event("unrouted");
                        true
                    }
                };
                if !parked {
                    // Left for redelivery by dead_letter. A failed event's claim says so (the
                    // release leaves it); any other is let go for the next delivery to claim.
                    let _ = self.claims.release(event_id).await;
                    return;
                }
                if let Err(err) = self.claims.finish(event_id).await {
                    tracing::warn!(%err, "cannot mark the event answered; a replay could answer it again");
                }
                self.settle_done(&message, &queue, event_id).await;
            }
            Err(err) => {
                let _ = self.claims.release(event_id).await;
                if delivered >= self.settings.max_deliver {
                    crate::metrics::event("dead_lettered");
                    self.park(
                        &message,
                        &event,
                        &queue,
                        "dispatcher_unavailable",
                        &err.to_string(),
                    )
                    .await;
                } else {
                    self.redeliver(&message, &err.to_string()).await;
                }
            }
        }
    }

    /// Waits until `event_id` heads its conversation's queue.
    async fn wait_turn(&self, queue: &str, event_id: &str) -> Result<(), redis::RedisError> {
        let mut pause = Duration::from_millis(5);
        let mut blocked_by: Option<(String, Instant)> = None;
        // A head nobody holds or finished for this long was lost (its stream message deleted):
        // every live message is redelivered and claimed well within it.
        let stall_limit = self.settings.ack_wait * (self.settings.max_deliver as u32 + 1);
        loop {
            let head = self.ordering.head(queue).await?;
            let Some(head) = head.filter(|h| h != event_id) else {
                return Ok(());
            };
            match self.claims.state(&head).await? {
                ClaimState::Done => {
                    // Answered by a replica that died before leaving the queue.
                    self.ordering.leave(queue, &head).await?;
                    continue;
                }
                ClaimState::Running => blocked_by = None,
                // A failed head is parked by its next delivery, within seconds.
                ClaimState::Free | ClaimState::Failed(_) => match &blocked_by {
                    Some((id, since)) if *id == head && since.elapsed() > stall_limit => {
                        tracing::warn!(stalled = %head, "dropping a queue entry no replica holds");
                        self.ordering.leave(queue, &head).await?;
                        continue;
                    }
                    Some((id, _)) if *id == head => {}
                    _ => blocked_by = Some((head, Instant::now())),
                },
            }
            self.ordering.wait_for_leave(pause).await;
            pause = (pause * 2).min(TURN_POLL_MAX);
        }
    }

    /// Runs `work` while telling JetStream (and the claim, when `claim` names one) that the
    /// message is still being worked on.
    async fn keep_alive<F: std::future::Future>(
        &self,
        message: &Message,
        claim: Option<&str>,
        work: F,
    ) -> F::Output {
        let period = self.settings.ack_wait / 3;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                _ = ticks.tick() => {
                    if let Err(err) = message.ack_with(AckKind::Progress).await {
                        tracing::warn!(%err, "cannot signal progress");
                    }
                    if let Some(event_id) = claim {
                        match self.claims.renew(event_id).await {
                            Ok(true) => {}
                            Ok(false) => tracing::warn!(event = event_id, "lost the event's claim to another replica"),
                            Err(err) => tracing::warn!(%err, "cannot renew the event's claim"),
                        }
                    }
                }
            }
        }
    }

    /// A delivery of an event whose expert failed for good (the user has the apology): parks
    /// it in the DLQ for the recorded `reason` (`{code}: {detail}`) and settles it, without
    /// running the expert again.
    async fn park_failed(&self, message: &Message, event: &Event, queue: &str, reason: &str) {
        let (code, detail) = reason.split_once(": ").unwrap_or((reason, ""));
        self.park(message, event, queue, code, detail).await;
    }

    /// Dead-letters the event, then marks it done and settles it; left for redelivery (by
    /// `dead_letter`) if the DLQ could not take it.
    async fn park(&self, message: &Message, event: &Event, queue: &str, code: &str, detail: &str) {
        if self
            .dead_letter(message, event.integration_id.as_str(), code, detail)
            .await
        {
            if let Err(err) = self.claims.finish(&event.id).await {
                tracing::warn!(%err, "cannot mark the dead-lettered event done");
            }
            self.settle_done(message, queue, &event.id).await;
        }
    }

    /// The event is settled: leave the queue, then ack. If leaving fails the message is
    /// redelivered, finds its claim done and tries again, so no queue entry blocks for ever.
    async fn settle_done(&self, message: &Message, queue: &str, event_id: &str) {
        match self.ordering.leave(queue, event_id).await {
            Ok(()) => ack(message).await,
            Err(err) => self.redeliver(message, &err.to_string()).await,
        }
    }

    /// Our own dependency failed: let JetStream deliver the event again later.
    async fn redeliver(&self, message: &Message, why: &str) {
        tracing::warn!(reason = why, "event left for redelivery");
        crate::metrics::event("redelivered");
        nak(message, REDELIVERY_DELAY).await;
    }

    /// Publishes the message unchanged to `dingtalk.dlq.dispatcher.{integration}` with the
    /// reason; `true` once stored (the caller acks), `false` after leaving the message for a
    /// redelivery because the DLQ could not take it.
    async fn dead_letter(
        &self,
        message: &Message,
        integration: &str,
        code: &str,
        detail: &str,
    ) -> bool {
        let attempts = message.info().map(|i| i.delivered).unwrap_or(1);
        let mut headers = HeaderMap::new();
        headers.insert(dlq_headers::ORIGINAL_SUBJECT, message.subject.as_str());
        headers.insert(dlq_headers::REASON, format!("{code}: {detail}").as_str());
        headers.insert(dlq_headers::ATTEMPTS, attempts.to_string().as_str());
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        headers.insert(
            MSG_ID_HEADER,
            crate::exhausted::dead_letter_id(sequence).as_str(),
        );
        let publish = async {
            self.jetstream
                .publish_with_headers(
                    subjects::dlq("dispatcher", integration),
                    headers,
                    message.payload.clone(),
                )
                .await?
                .await
        };
        match tokio::time::timeout(crate::answer::PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(_)) => {
                crate::metrics::dead_letter(code);
                tracing::warn!(reason = code, detail, "event dead-lettered");
                true
            }
            Ok(Err(err)) => {
                tracing::error!(%err, "cannot dead-letter the event; redelivering");
                nak(message, REDELIVERY_DELAY).await;
                false
            }
            Err(_) => {
                tracing::error!("dead-lettering timed out; redelivering");
                nak(message, REDELIVERY_DELAY).await;
                false
            }
        }
    }
}

/// Waits for a free slot and room in hand; returns up to [`MAX_BATCH`] in-hand permits, as many
/// as slots are free. `None` when the semaphores are closed.
async fn capacity(
    slots: &Arc<Semaphore>,
    in_hand: &Arc<Semaphore>,
) -> Option<OwnedSemaphorePermit> {
    drop(slots.clone().acquire_owned().await.ok()?);
    let first = in_hand.clone().acquire_owned().await.ok()?;
    let mut permits = first;
    let wanted = slots.available_permits().clamp(1, MAX_BATCH);
    while permits.num_permits() < wanted {
        match in_hand.clone().try_acquire_owned() {
            Ok(more) => permits.merge(more),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// The group record of a group message (mentioning the bot or not).
fn group_seen(event: &Event) -> Option<ChatSeen> {
    let EventBody::Message(message) = &event.body else {
        return None;
    };
    (message.conversation.kind == ConversationType::Group).then(|| ChatSeen {
        integration: event.integration_id.to_string(),
        chat_id: message.conversation.id.clone(),
        title: message.conversation.title.clone().unwrap_or_default(),
        at: event.received_at,
    })
}

/// Whether reading a stream message failed because it is not there (deleted or expired).
fn no_message(kind: RawMessageErrorKind) -> bool {
    match kind {
        RawMessageErrorKind::NoMessageFound => true,
        RawMessageErrorKind::JetStream(err) => err.error_code() == ErrorCode::NO_MESSAGE_FOUND,
        _ => false,
    }
}

async fn ack(message: &Message) {
    if let Err(err) = message.ack().await {
        tracing::warn!(%err, "cannot ack; the event will be redelivered and found done");
    }
}

async fn nak(message: &Message, delay: Duration) {
    if let Err(err) = message.ack_with(AckKind::Nak(Some(delay))).await {
        tracing::warn!(%err, "cannot nak; the event is redelivered after the ack wait");
    }
}
