//! Redis connection helper: one auto-reconnecting connection per process, every call bounded;
//! and the memory gauges every service reports (`INFO memory`), for the "Redis memory nearly
//! full" alert.

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

/// Bytes Redis uses (`used_memory` of `INFO memory`), a gauge every service reports.
pub const USED_MEMORY: &str = "dingtalk_gateway_redis_used_memory_bytes";
/// Redis's `maxmemory` (0: no limit), beside [`USED_MEMORY`]: with the `noeviction` policy the
/// gateway needs, a Redis that reaches it refuses writes and every stage stops making progress.
pub const MAX_MEMORY: &str = "dingtalk_gateway_redis_max_memory_bytes";

/// How often the memory gauges are refreshed.
pub const MEMORY_INTERVAL: Duration = Duration::from_secs(15);

/// What `INFO memory` says about the limit Redis is heading for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// `used_memory`.
    pub used: u64,
    /// `maxmemory`; 0 when unlimited.
    pub max: u64,
}

impl Memory {
    /// Reads the `used_memory` and `maxmemory` lines of `INFO memory`'s answer.
    pub fn parse(info: &str) -> Option<Memory> {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|value| value.trim().parse::<u64>().ok())
        };
        Some(Memory {
            used: field("used_memory")?,
            max: field("maxmemory")?,
        })
    }
}

/// Samples `INFO memory` once and sets [`USED_MEMORY`] and [`MAX_MEMORY`].
pub async fn sample_memory(conn: &mut ConnectionManager) -> Result<Memory, redis::RedisError> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(conn).await?;
    let memory = Memory::parse(&info).ok_or_else(|| {
        redis::RedisError::from((
            redis::ErrorKind::Parse,
            "INFO memory has no used_memory or maxmemory",
        ))
    })?;
    metrics::gauge!(USED_MEMORY).set(memory.used as f64);
    metrics::gauge!(MAX_MEMORY).set(memory.max as f64);
    Ok(memory)
}

/// Samples every [`MEMORY_INTERVAL`] until `shutdown`; failures are logged at debug level
/// (`/readyz` already reports Redis being down).
pub async fn report_memory(conn: ConnectionManager, shutdown: crate::shutdown::Shutdown) {
    shutdown
        .every(MEMORY_INTERVAL, || {
            let mut conn = conn.clone();
            async move {
                if let Err(err) = sample_memory(&mut conn).await {
                    tracing::debug!(%err, "cannot sample Redis's memory");
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_info() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nused_memory_rss:9\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\nmaxmemory_policy:noeviction\r\n";
        assert_eq!(
            Memory::parse(info),
            Some(Memory {
                used: 1_048_576,
                max: 0
            })
        );
        assert_eq!(Memory::parse("# Memory\r\nused_memory_rss:9\r\n"), None);
    }

    #[tokio::test]
    async fn used_and_max_memory_are_reported_as_gauges() {
        let redis = test_harness::RedisServer::start().await;
        let mut conn = connect(&redis.url()).await.unwrap();
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(64 * 1024 * 1024)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        crate::telemetry::metrics_handle();
        let memory = sample_memory(&mut conn).await.unwrap();
        assert_eq!(memory.max, 64 * 1024 * 1024);
        assert!(memory.used > 0 && memory.used < memory.max, "{memory:?}");
        let text = crate::telemetry::render_metrics();
        assert!(
            text.contains(&format!("{MAX_MEMORY} 67108864")),
            "{MAX_MEMORY} missing from:\n{text}"
        );
        assert!(text.contains(USED_MEMORY), "{text}");
    }
}
