//! Shared set-up for the ingress integration tests: [`spawn_app`] starts the whole ingress
//! in-process (public, admin and ops listeners on port 0) against its own `nats-server` and
//! `redis-server`, so every test is isolated and runs the code the binary runs.
//!
//! ```ignore
//! mod support;
//! let app = support::spawn_app().await;
//! let answer = app.admin(reqwest::Method::GET, "/api/dingtalk/integrations").send().await?;
//! ```

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::time::Duration;

use common::config::Env;
use common::shutdown::Shutdown;
use test_harness::{NatsServer, RedisServer};

/// The `ADMIN_TOKEN` of apps from [`spawn_app`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";
/// The `PUBLIC_BASE_URL` of apps from [`spawn_app`].
pub const PUBLIC_BASE_URL: &str = "https://bot.example.com";
/// Where apps from [`spawn_app`] look for DingTalk unless told otherwise: the discard port, so
/// a stray call fails at once instead of reaching the internet.
pub const NO_DINGTALK: &str = "http://127.0.0.1:9";

/// `NATS_MAX_BYTES` of test apps: 64 MiB per stream.
pub const TEST_STREAM_BYTES: &str = "67108864";

/// A running ingress and the servers it stands on; dropping it stops everything.
pub struct TestApp {
    /// `http://` address of the admin listener.
    pub admin_url: String,
    /// `http://` address of the public listener.
    pub public_url: String,
    /// `http://` address of the ops listener (`METRICS_ADDR`).
    pub ops_url: String,
    /// A client with a timeout, for every call.
    pub http: reqwest::Client,
    /// The Redis the app uses (for tests that inspect or reuse it).
    pub redis: RedisServer,
    /// The NATS the app uses.
    pub nats: NatsServer,
    shutdown: Shutdown,
    running: Option<ingress::Running>,
}

impl TestApp {
    /// A request to the admin listener carrying `ADMIN_TOKEN`.
    pub fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_TOKEN)
    }

    /// A request to the admin listener without any token.
    pub fn anonymous(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.admin_url))
    }

    /// Stops the ingress as SIGTERM would and waits for its listeners to drain.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(running) = self.running.take() {
            running.stopped(Duration::from_secs(5)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Starts an ingress with the defaults above.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts an ingress; `overrides` replace or add environment variables (an empty value unsets
/// one, as in an env file).
pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let (nats, redis) = tokio::join!(NatsServer::start(), RedisServer::start());
    let (nats_url, redis_url) = (nats.url(), redis.url());
    let defaults = [
        ("NATS_URL", nats_url.as_str()),
        ("REDIS_URL", redis_url.as_str()),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("INGRESS_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("PUBLIC_BASE_URL", PUBLIC_BASE_URL),
        ("DINGTALK_API_URL", NO_DINGTALK),
        ("DINGTALK_OAPI_URL", NO_DINGTALK),
        // JetStream refuses streams whose caps exceed the free disk; tests store little.
        ("NATS_MAX_BYTES", TEST_STREAM_BYTES),
    ];
    // Later pairs win, so overrides replace defaults.
    let env = Env::from_pairs(defaults.iter().chain(overrides).copied());
    let config = ingress::Config::from_env(&env).expect("test configuration is valid");
    let shutdown = Shutdown::new();
    let running = ingress::start(&config, &shutdown)
        .await
        .expect("the ingress starts");
    TestApp {
        admin_url: format!("http://{}", running.admin.addr),
        public_url: format!("http://{}", running.public.addr),
        ops_url: format!("http://{}", running.foundation.ops.addr),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client builds"),
        redis,
        nats,
        shutdown,
        running: Some(running),
    }
}

/// A second ingress over an existing NATS and Redis (another replica), which can be killed.
pub struct Replica {
    /// `http://` address of its admin listener.
    pub admin_url: String,
    shutdown: Shutdown,
    running: Option<ingress::Running>,
}

impl Replica {
    /// Ends the replica as a crash would: its Stream connections drop at once, its leases and
    /// presence are left to expire.
    pub async fn kill(&mut self) {
        if let Some(running) = self.running.take() {
            if let Some(stream) = running.stream {
                stream.abort();
                let _ = stream.await;
            }
        }
        self.shutdown.trigger();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.shutdown.trigger();
    }
}

/// Starts another ingress replica on `nats_url` / `redis_url`.
pub async fn spawn_replica(nats_url: &str, redis_url: &str, overrides: &[(&str, &str)]) -> Replica {
    let defaults = [
        ("NATS_URL", nats_url),
        ("REDIS_URL", redis_url),
        ("METRICS_ADDR", "127.0.0.1:0"),
        ("INGRESS_ADDR", "127.0.0.1:0"),
        ("ADMIN_ADDR", "127.0.0.1:0"),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("DINGTALK_OAPI_URL", NO_DINGTALK),
        ("NATS_MAX_BYTES", TEST_STREAM_BYTES),
    ];
    let env = Env::from_pairs(defaults.iter().chain(overrides).copied());
    let config = ingress::Config::from_env(&env).expect("test configuration is valid");
    let shutdown = Shutdown::new();
    let running = ingress::start(&config, &shutdown)
        .await
        .expect("the replica starts");
    Replica {
        admin_url: format!("http://{}", running.admin.addr),
        shutdown,
        running: Some(running),
    }
}
