//! The NATS server a test talks to.

use std::path::Path;

use crate::program::Program;
use crate::server::Server;

/// A JetStream-enabled `nats-server` that belongs to one test, so tests can run in parallel and
/// crash or restart their server without disturbing each other.
///
/// Dropping the handle kills the server and deletes its store, also when the test panics.
#[derive(Debug)]
pub struct NatsServer {
    server: Server,
}

impl NatsServer {
    /// Starts a JetStream-enabled nats-server on a free port with its own store dir; waits until
    /// it accepts connections (its `INFO` greeting names it and reports JetStream).
    ///
    /// Panics, with the server log, if the binary is missing or the server never gets ready.
    pub async fn start() -> NatsServer {
        NatsServer {
            server: Server::start(Program::Nats).await,
        }
    }

    /// Where clients connect: `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        self.server.url(Program::Nats)
    }

    /// The client port, fixed for the life of the handle so clients can reconnect after a restart.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// Graceful shutdown (SIGTERM, JetStream flushes its store); waits for the exit. Does nothing
    /// when already stopped.
    pub async fn stop(&mut self) {
        self.server.stop().await
    }

    /// SIGKILL and wait for the exit: a crash, for tests of what survives one.
    pub async fn kill(&mut self) {
        self.server.kill().await
    }

    /// Stops the server if it runs, then starts it on the same port with the same store dir, so
    /// streams and stored messages survive; waits until it is ready.
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

    /// The file collecting the server's stdout and stderr; `None` in a container.
    pub fn log_path(&self) -> Option<std::path::PathBuf> {
        self.server.log_path()
    }

    /// The server's process id while it runs, for tests that check no process is left behind;
    /// `None` when stopped or in a container.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// The temp dir holding the JetStream store and the log, removed on drop; `None` in a container.
    pub fn data_dir(&self) -> Option<&Path> {
        self.server.data_dir()
    }
}
