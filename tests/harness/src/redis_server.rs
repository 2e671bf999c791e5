//! The Redis server a test talks to.

use std::path::Path;

use crate::program::Program;
use crate::server::Server;

/// A `redis-server` that belongs to one test, so tests can run in parallel and crash or restart
/// their server without disturbing each other.
///
/// It runs without persistence (`--save "" --appendonly no`): a restarted Redis starts empty.
/// Dropping the handle kills the server and deletes its temp dir, also when the test panics.
#[derive(Debug)]
pub struct RedisServer {
    server: Server,
}

impl RedisServer {
    /// Starts redis-server on a free port with its own dir; waits until it answers `INFO` with its
    /// own pid.
    ///
    /// Panics, with the server log, if the binary is missing or the server never gets ready.
    pub async fn start() -> RedisServer {
        RedisServer {
            server: Server::start(Program::Redis).await,
        }
    }

    /// Like [`RedisServer::start`], but with the append-only file on (`appendfsync always`): a
    /// killed or restarted server comes back with every write it acknowledged, as a production
    /// Redis with AOF does. For fault tests that crash Redis under a running system.
    pub async fn start_durable() -> RedisServer {
        RedisServer {
            server: Server::start(Program::RedisDurable).await,
        }
    }

    /// Where clients connect: `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url(Program::Redis)
    }

    /// The port, fixed for the life of the handle so clients can reconnect after a restart.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Graceful shutdown (SIGTERM); waits for the exit. Does nothing when already stopped.
    pub async fn stop(&mut self) {
        self.server.stop().await
    }

    /// SIGKILL and wait for the exit: a crash, for tests of what the clients do then.
    pub async fn kill(&mut self) {
        self.server.kill().await
    }

    /// Stops the server if it runs, then starts it on the same port; waits until it is ready.
    /// The data is gone, unless started with [`RedisServer::start_durable`].
    pub async fn restart(&mut self) {
        self.server.restart().await
    }

    /// Whether the server process is alive (false after `stop`, `kill`, or a crash).
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// The last lines of the server's log, to print when a test fails.
    pub fn log_tail(&self) -> String {
        self.server.log_tail()
    }

    /// The server's process id while it runs, for tests that check no process is left behind;
    /// `None` when stopped or in a container.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// The temp dir holding the server's working dir and log, removed on drop; `None` in a
    /// container.
    pub fn data_dir(&self) -> Option<&Path> {
        self.server.data_dir()
    }
}
