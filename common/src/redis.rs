//! Redis connection helper: one auto-reconnecting connection per process, every call bounded.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// How long one Redis command may take before the caller gets an error instead of a hang.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a [`ConnectionManager`] that reconnects by itself after Redis restarts.
///
/// Fails when Redis is not reachable now, so start-up reports a wrong `REDIS_URL` at once.
pub async fn connect(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT))
        .set_number_of_retries(2);
    ConnectionManager::new_with_config(client, config).await
}

/// `PING`, for readiness probes.
pub async fn ping(conn: &mut ConnectionManager) -> Result<(), redis::RedisError> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
}
