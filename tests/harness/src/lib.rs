//! Real `nats-server -js` and `redis-server` processes for tests: one of each per test, on free ports.
//!
//! `let nats = NatsServer::start().await;` then connect to `nats.url()`; `RedisServer` works the same.
//! `stop()`, `kill()` and `restart()` (same port, same data dir) drive fault tests; dropping a handle
//! kills its process and deletes its temp dir, also when the test panics. With the `testcontainers`
//! feature and `TEST_HARNESS_CONTAINERS=1` the servers come from the `nats:2` and `redis:7` images.

#![warn(missing_docs)]

#[cfg(feature = "testcontainers")]
mod container;
mod local;
mod nats_server;
mod port;
mod program;
mod redis_server;
mod server;

pub use nats_server::NatsServer;
pub use redis_server::RedisServer;
pub use server::CONTAINERS_ENV;
