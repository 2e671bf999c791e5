//! Events JetStream stopped delivering: the last of `DISPATCHER_MAX_DELIVER` deliveries ended
//! without an ack and without a worker to dead-letter it (the replica holding it died each time).
//!
//! JetStream announces each on `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.DINGTALK_EVENTS.{consumer}`.
//! Every replica listens; each reads the event from the stream by sequence, parks it in
//! `dingtalk.dlq.dispatcher.{integration_id}` (reason `max_deliveries`) with the same
//! `Nats-Msg-Id` a worker would use, so the DLQ keeps one copy, marks its claim done as a
//! worker's dead letter does (a callback replayed after the duplicate window must not run it
//! again: the replay from the DLQ, under a new id, is the operator's call), and takes it out of
//! its conversation's queue so later messages do not wait for it.

use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use common::bus::event::Event;
use common::bus::streams::EVENTS;
use common::bus::{dlq_headers, subjects, Timestamp, MSG_ID_HEADER};
use common::shutdown::Shutdown;
use futures::StreamExt;
use serde::Deserialize;

use crate::claims::Claims;
use crate::ordering::{queue_key, Ordering};
use crate::routing::{decide, Decision};

/// The fields of a max-deliveries advisory the dispatcher needs.
#[derive(Debug, Deserialize)]
struct Advisory {
    stream_seq: u64,
    deliveries: i64,
}

/// The advisory subject for the dispatcher's consumer.
pub fn advisory_subject(consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{EVENTS}.{consumer}")
}

/// The `Nats-Msg-Id` of the dead letter of stream message `sequence` (shared with the worker's
/// dead letters, so one event is parked once).
pub fn dead_letter_id(sequence: u64) -> String {
    format!("dispatcher:{sequence}")
}

/// Parks every event JetStream gives up on, until `shutdown`.
pub async fn watch(
    nats: async_nats::Client,
    jetstream: Context,
    ordering: Ordering,
    claims: Claims,
    consumer: String,
    shutdown: Shutdown,
) {
    let mut advisories = match nats.subscribe(advisory_subject(&consumer)).await {
        Ok(subscriber) => subscriber,
        Err(err) => {
            tracing::warn!(%err, "cannot listen for max-deliveries advisories; such events will not reach the DLQ");
            return;
        }
    };
    loop {
        let message = tokio::select! {
            () = shutdown.wait() => return,
            message = advisories.next() => message,
        };
        let Some(message) = message else { return };
        match serde_json::from_slice::<Advisory>(&message.payload) {
            Ok(advisory) => park(&jetstream, &ordering, &claims, advisory).await,
            Err(err) => tracing::warn!(%err, "unreadable max-deliveries advisory"),
        }
    }
}

async fn park(jetstream: &Context, ordering: &Ordering, claims: &Claims, advisory: Advisory) {
    let stored = async {
        jetstream
            .get_stream(EVENTS)
            .await?
            .get_raw_message(advisory.stream_seq)
            .await
            .map_err(async_nats::Error::from)
    };
    let stored = match tokio::time::timeout(crate::answer::PUBLISH_TIMEOUT, stored).await {
        Ok(Ok(stored)) => stored,
        Ok(Err(err)) => {
            tracing::error!(%err, sequence = advisory.stream_seq, "an event ran out of deliveries and cannot be read back for the DLQ");
            return;
        }
        Err(_) => {
            tracing::error!(
                sequence = advisory.stream_seq,
                "reading an event that ran out of deliveries timed out"
            );
            return;
        }
    };
    let subject = stored.subject.to_string();
    let integration = subject.split('.').nth(2).unwrap_or("unknown").to_owned();
    let mut headers = HeaderMap::new();
    headers.insert(dlq_headers::ORIGINAL_SUBJECT, subject.as_str());
    headers.insert(
        dlq_headers::REASON,
        "max_deliveries: every delivery ended without an answer (the replicas holding it stopped)",
    );
    headers.insert(
        dlq_headers::ATTEMPTS,
        advisory.deliveries.to_string().as_str(),
    );
    headers.insert(MSG_ID_HEADER, dead_letter_id(advisory.stream_seq).as_str());
    let publish = async {
        jetstream
            .publish_with_headers(
                subjects::dlq("dispatcher", &integration),
                headers,
                stored.payload.clone(),
            )
            .await?
            .await
    };
    let parked = match tokio::time::timeout(crate::answer::PUBLISH_TIMEOUT, publish).await {
        Ok(Ok(_)) => {
            crate::metrics::dead_letter("max_deliveries");
            tracing::warn!(
                sequence = advisory.stream_seq,
                "an event ran out of deliveries; dead-lettered"
            );
            true
        }
        Ok(Err(err)) => {
            tracing::error!(%err, "cannot dead-letter an event that ran out of deliveries");
            false
        }
        Err(_) => {
            tracing::error!("dead-lettering an event that ran out of deliveries timed out");
            false
        }
    };
    let Ok(event) = Event::from_slice(&stored.payload) else {
        return;
    };
    if parked {
        if let Err(err) = claims.finish(&event.id).await {
            tracing::warn!(%err, event = %event.id, "cannot mark a dead-lettered event done; a replayed callback could run it");
        }
    }
    // Free its conversation: nothing will ever answer it.
    if let Ok(Decision::Handle(work)) = decide(&event, Timestamp::now()) {
        if let Err(err) = ordering.leave(&queue_key(&work.key), &event.id).await {
            tracing::warn!(%err, "cannot take a dead event out of its conversation's queue; the stall guard will");
        }
    }
}
