//! The background task that keeps this process's cache in step with writes made elsewhere.
//!
//! It subscribes to `dtg:registry:invalidate` on a dedicated connection (a subscribed
//! connection can do nothing else) and forgets the named integration on every message.
//! When the connection drops it reconnects with capped exponential backoff and, once
//! subscribed again, clears the whole cache: messages published while it was away are lost
//! (Redis pub/sub does not queue), so any entry may be stale. A periodic `PING` detects a
//! connection that died silently. The task ends when the registry is shut down or when every
//! `Registry` handle is gone (the shutdown sender lives inside the handles' shared state).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{PubSubSink, PubSubStream};
use tokio::sync::{oneshot, watch};

use super::model::IntegrationId;
use super::store::INVALIDATE_CHANNEL;
use super::{Caches, RegistryError};

/// First reconnect delay after the subscription drops.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between reconnect attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the idle subscription is checked for life.
const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Everything the task needs; it holds no `Registry` handle, so it cannot keep one alive.
pub(crate) struct Subscriber {
    pub(crate) client: redis::Client,
    pub(crate) caches: Arc<Caches>,
    pub(crate) timeout: Duration,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// Why one subscription ended.
enum Ended {
    /// Shutdown was requested or every handle was dropped: stop for good.
    Shutdown,
    /// The connection was lost: reconnect.
    Lost(String),
}

impl Subscriber {
    /// Runs until shutdown. `ready` learns the outcome of the first subscription attempt, so
    /// `Registry::connect` only returns once cross-process invalidation is live.
    pub(crate) async fn run(mut self, ready: oneshot::Sender<Result<(), RegistryError>>) {
        let mut ready = Some(ready);
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.subscribe().await {
                Ok((sink, stream)) => {
                    // Anything may have changed while we were not listening.
                    self.caches.clear();
                    backoff = BACKOFF_MIN;
                    if let Some(ready) = ready.take() {
                        // The receiver is gone only if `connect` gave up; nothing to tell.
                        let _ = ready.send(Ok(()));
                    } else {
                        tracing::info!("registry invalidation subscription restored");
                    }
                    match self.listen(sink, stream).await {
                        Ended::Shutdown => return,
                        Ended::Lost(reason) => tracing::warn!(
                            %reason,
                            "registry invalidation subscription lost; cached entries now \
                             expire by TTL only until it is restored"
                        ),
                    }
                }
                Err(error) => match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(error));
                        return;
                    }
                    None => tracing::warn!(
                        %error,
                        retry_in_ms = backoff.as_millis(),
                        "registry invalidation subscription failed"
                    ),
                },
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stopped(&mut self.shutdown) => return,
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Opens a dedicated connection and subscribes, within the timeout.
    async fn subscribe(&self) -> Result<(PubSubSink, PubSubStream), RegistryError> {
        let attempt = async {
            let (mut sink, stream) = self.client.get_async_pubsub().await?.split();
            sink.subscribe(INVALIDATE_CHANNEL).await?;
            Ok((sink, stream))
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(source)) => Err(RegistryError::Redis {
                op: "SUBSCRIBE",
                source,
            }),
            Err(_) => Err(RegistryError::Timeout {
                op: "SUBSCRIBE",
                timeout: self.timeout,
            }),
        }
    }

    /// Applies invalidations until the connection ends or shutdown is requested.
    async fn listen(&mut self, mut sink: PubSubSink, mut stream: PubSubStream) -> Ended {
        let mut ping = tokio::time::interval(PING_INTERVAL);
        ping.reset();
        loop {
            tokio::select! {
                () = stopped(&mut self.shutdown) => return Ended::Shutdown,
                message = stream.next() => {
                    let Some(message) = message else {
                        return Ended::Lost("connection closed".to_owned());
                    };
                    self.apply(message.get_payload_bytes());
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(self.timeout, sink.ping::<redis::Value>()).await;
                    match pong {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => return Ended::Lost(format!("PING failed: {error}")),
                        Err(_) => return Ended::Lost("PING timed out".to_owned()),
                    }
                }
            }
        }
    }

    /// Forgets one integration; a payload that is not an id means someone else is publishing
    /// on our channel, and forgetting everything is the safe reaction.
    fn apply(&self, payload: &[u8]) {
        let id = std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.parse::<IntegrationId>().ok());
        metrics::counter!("dingtalk_gateway_registry_invalidations_total").increment(1);
        match id {
            Some(id) => self.caches.invalidate(&id),
            None => {
                tracing::warn!(
                    channel = INVALIDATE_CHANNEL,
                    "invalidation message is not an integration id; clearing the whole cache"
                );
                self.caches.clear();
            }
        }
    }
}

/// Completes when shutdown is signalled or the sender (owned by the registry's shared state)
/// is dropped.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // `wait_for` errs only when the sender is gone, which also means "stop".
    let _ = shutdown.wait_for(|stop| *stop).await;
}
