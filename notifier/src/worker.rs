//! The consumer loop: `DINGTALK_COMMANDS` through one durable pull consumer shared by every
//! replica, at most `NOTIFIER_CONCURRENCY` commands in flight per replica.
//!
//! A permit of the semaphore is taken *before* the next message is pulled, so a replica never
//! holds more messages than it can work on. Each message is acked only after its result (and
//! dead letter) was confirmed by JetStream; a deferred command is nak'ed with its delay. Long
//! commands send `+WPI` (in progress) so JetStream does not redeliver them meanwhile. When the
//! consumer or its message stream fails, it is rebuilt with backoff (vector's NATS source does
//! the same); on shutdown no new message is pulled and in-flight commands finish.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::message::{Acker, Message};
use async_nats::jetstream::{self, AckKind};
use common::bus::{streams, subjects};
use common::shutdown::Shutdown;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::engine::{AbortOnDrop, Disposition, Engine, Incoming};
use crate::metrics;
use crate::outcome;
use crate::publish::Publisher;

/// The durable consumer every replica shares.
pub const CONSUMER: &str = "notifier";
/// Unacked (including deferred) commands JetStream keeps out at once: large, so that a burst
/// of one tenant deferred for lack of budget never stops delivery of the others' commands.
pub const MAX_ACK_PENDING: i64 = 100_000;
/// Retry delay when publishing a result failed.
const PUBLISH_RETRY: Duration = Duration::from_secs(1);

/// The consumer's configuration: explicit acks, unlimited deliveries (deferrals count as
/// deliveries; malformed commands are acked at once, so nothing loops), all commands.
pub fn consumer_config(ack_wait: Duration) -> pull::Config {
    pull::Config {
        durable_name: Some(CONSUMER.to_owned()),
        description: Some("dingtalk-gateway notifier: executes commands".to_owned()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        filter_subject: subjects::COMMANDS_ALL.to_owned(),
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// Creates (or opens) the shared durable consumer.
/// An existing consumer keeps its settings (the first replica's `ack_wait` wins).
pub async fn consumer(
    jetstream: &jetstream::Context,
    ack_wait: Duration,
) -> Result<PullConsumer, async_nats::Error> {
    let stream = jetstream.get_stream(streams::COMMANDS).await?;
    Ok(stream
        .get_or_create_consumer(CONSUMER, consumer_config(ack_wait))
        .await?)
}

/// The worker's settings.
#[derive(Debug, Clone, Copy)]
pub struct WorkerConfig {
    /// Commands in flight at once.
    pub concurrency: usize,
    /// The consumer's ack wait; in-progress is sent every third of it.
    pub ack_wait: Duration,
}

/// Runs the loop until `shutdown`, then waits for the commands in flight.
pub async fn run(
    engine: Engine,
    publisher: Publisher,
    jetstream: jetstream::Context,
    config: WorkerConfig,
    shutdown: Shutdown,
) {
    let concurrency = config.concurrency;
    let semaphore = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let mut backoff = Duration::from_millis(100);
    'consumer: while !shutdown.is_triggered() {
        let messages = match consumer(&jetstream, config.ack_wait).await {
            Ok(consumer) => {
                consumer
                    .stream()
                    .max_messages_per_batch(concurrency)
                    .messages()
                    .await
            }
            Err(err) => Err(async_nats::jetstream::consumer::StreamError::with_source(
                async_nats::jetstream::consumer::StreamErrorKind::Other,
                err,
            )),
        };
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(err) => {
                tracing::warn!(%err, backoff_ms = backoff.as_millis() as u64, "cannot open the commands consumer; retrying");
                tokio::select! {
                    () = shutdown.wait() => break 'consumer,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                () = shutdown.wait() => break 'consumer,
                permit = Arc::clone(&semaphore).acquire_owned() => permit.expect("the semaphore is never closed"),
            };
            let next = tokio::select! {
                () = shutdown.wait() => break 'consumer,
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let engine = engine.clone();
                    let publisher = publisher.clone();
                    let progress_every = config.ack_wait / 3;
                    tasks.spawn(async move {
                        process(&engine, &publisher, message, progress_every).await;
                        drop(permit);
                    });
                }
                Some(Err(err)) => {
                    tracing::warn!(%err, "commands consumer error; rebuilding it");
                    break;
                }
                None => {
                    tracing::warn!("commands consumer ended; rebuilding it");
                    break;
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Executes one delivery and acks, naks or (on a publish failure) naks with a short delay.
async fn process(
    engine: &Engine,
    publisher: &Publisher,
    message: Message,
    progress_every: Duration,
) {
    let incoming = match message.info() {
        Ok(info) => Incoming {
            subject: message.subject.to_string(),
            headers: message.headers.clone(),
            payload: message.payload.clone(),
            stream_sequence: info.stream_sequence,
            delivered: info.delivered,
            published: info.published,
        },
        Err(err) => {
            tracing::warn!(%err, subject = %message.subject, "not a JetStream delivery; ignored");
            return;
        }
    };
    let (_, acker) = message.split();
    let acker = Arc::new(acker);
    let progress = keep_in_progress(Arc::clone(&acker), progress_every);
    let disposition = engine.handle(&incoming).await;
    drop(progress);
    let reply = match disposition {
        Disposition::Finished(result) => match publish(publisher, &result, &incoming).await {
            Ok(()) => AckKind::Ack,
            Err(err) => {
                tracing::warn!(%err, command_id = %result.command_id, "result not published; the command will be answered again");
                AckKind::Nak(Some(PUBLISH_RETRY))
            }
        },
        Disposition::Later(delay) => AckKind::Nak(Some(delay)),
    };
    if let Err(err) = acker.ack_with(reply).await {
        tracing::warn!(%err, "cannot ack a command; JetStream will redeliver it (its result is kept)");
    }
}

/// Publishes a result, and its dead letter when it is a permanent failure.
async fn publish(
    publisher: &Publisher,
    result: &common::bus::result::CommandResult,
    incoming: &Incoming,
) -> Result<(), crate::publish::PublishError> {
    if let Some(reason) = outcome::dead_letter_reason(result) {
        publisher
            .dead_letter(incoming, &result.command_id, &reason)
            .await?;
        metrics::dead_letter();
        tracing::warn!(command_id = %result.command_id, %reason, "command failed for good; dead-lettered");
    }
    publisher.result(result, incoming).await?;
    metrics::result_published(result.op, result.status);
    Ok(())
}

/// Tells JetStream every `every` that the command is still being worked on.
fn keep_in_progress(acker: Arc<Acker>, every: Duration) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(err) = acker.ack_with(AckKind::Progress).await {
                tracing::debug!(%err, "cannot send in-progress");
            }
        }
    }))
}
