//! Where a server runs: a local child process by default, a container when asked for.

use std::path::Path;

#[cfg(feature = "testcontainers")]
use crate::container::ContainerServer;
use crate::local::{LocalServer, HOST};
use crate::program::Program;

/// Environment variable that, set to `1`, runs the servers from container images. Needs the
/// `testcontainers` feature of this crate and a Docker engine.
pub const CONTAINERS_ENV: &str = "TEST_HARNESS_CONTAINERS";

/// One running (or stopped) server of either backend.
#[derive(Debug)]
// A few hundred bytes, once per server per test: boxing either variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Server {
    Local(LocalServer),
    #[cfg(feature = "testcontainers")]
    Container(ContainerServer),
}

impl Server {
    pub(crate) async fn start(program: Program) -> Server {
        if std::env::var(CONTAINERS_ENV).is_ok_and(|value| value == "1") {
            #[cfg(feature = "testcontainers")]
            return Server::Container(ContainerServer::start(program).await);
            #[cfg(not(feature = "testcontainers"))]
            panic!(
                "{CONTAINERS_ENV}=1 asks for containers, but test-harness was built without its \
                 `testcontainers` feature"
            );
        }
        Server::Local(LocalServer::start(program).await)
    }

    pub(crate) fn url(&self, program: Program) -> String {
        format!("{}://{}:{}", program.scheme(), self.host(), self.port())
    }

    fn host(&self) -> &str {
        match self {
            Server::Local(_) => HOST,
            #[cfg(feature = "testcontainers")]
            Server::Container(server) => server.host(),
        }
    }

    pub(crate) fn port(&self) -> u16 {
        match self {
            Server::Local(server) => server.port(),
            #[cfg(feature = "testcontainers")]
            Server::Container(server) => server.port(),
        }
    }

    pub(crate) async fn stop(&mut self) {
        match self {
            Server::Local(server) => server.stop().await,
            #[cfg(feature = "testcontainers")]
            Server::Container(server) => server.stop().await,
        }
    }

    pub(crate) async fn kill(&mut self) {
        match self {
            Server::Local(server) => server.kill().await,
            #[cfg(feature = "testcontainers")]
            Server::Container(server) => server.kill().await,
        }
    }

    pub(crate) async fn restart(&mut self) {
        match self {
            Server::Local(server) => server.restart().await,
            #[cfg(feature = "testcontainers")]
            Server::Container(server) => server.restart().await,
        }
    }

    pub(crate) fn is_running(&self) -> bool {
        match self {
            Server::Local(server) => server.is_running(),
            #[cfg(feature = "testcontainers")]
            Server::Container(server) => server.is_running(),
        }
    }

    pub(crate) fn log_tail(&self) -> String {
        match self {
            Server::Local(server) => server.log_tail(),
            #[cfg(feature = "testcontainers")]
            Server::Container(server) => server.log_tail(),
        }
    }

    pub(crate) fn log_path(&self) -> Option<std::path::PathBuf> {
        match self {
            Server::Local(server) => Some(server.log_path()),
            #[cfg(feature = "testcontainers")]
            Server::Container(_) => None,
        }
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        match self {
            Server::Local(server) => server.pid(),
            #[cfg(feature = "testcontainers")]
            Server::Container(_) => None,
        }
    }

    pub(crate) fn data_dir(&self) -> Option<&Path> {
        match self {
            Server::Local(server) => Some(server.dir()),
            #[cfg(feature = "testcontainers")]
            Server::Container(_) => None,
        }
    }
}
