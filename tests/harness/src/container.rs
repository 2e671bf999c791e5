//! The same servers from container images, for machines with a Docker engine instead of the
//! Debian packages.
//!
//! The host port is chosen by us and mapped explicitly, so it stays the same across
//! `stop()`/`restart()`; the data lives in the container, which is stopped and started again
//! rather than recreated, so NATS keeps its JetStream store (Redis, without persistence, does not).

use std::time::Instant;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, ContainerRequest, GenericImage, ImageExt};

use crate::port::free_port;
use crate::program::{Expect, Program, POLL_INTERVAL, READY_TIMEOUT};

/// Attempts before giving up when a freshly picked host port turns out to be taken.
const START_ATTEMPTS: usize = 5;

/// A server in a container that is removed when this handle is dropped.
#[derive(Debug)]
pub(crate) struct ContainerServer {
    program: Program,
    container: ContainerAsync<GenericImage>,
    host: String,
    port: u16,
    /// What the harness last did with the container; a crash inside it is not noticed.
    running: bool,
}

impl ContainerServer {
    /// Pulls (if needed) and starts the image with a free host port mapped to the server port.
    pub(crate) async fn start(program: Program) -> ContainerServer {
        let mut errors = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let port = free_port();
            match request(program, port).start().await {
                Ok(container) => {
                    let host = match container.get_host().await {
                        Ok(host) => host.to_string(),
                        Err(error) => panic!("asking Docker for the container host: {error}"),
                    };
                    return ContainerServer {
                        program,
                        container,
                        host,
                        port,
                        running: true,
                    };
                }
                Err(error) => errors.push(format!("port {port}: {error}")),
            }
        }
        panic!(
            "starting the {} container failed {START_ATTEMPTS} times (is a Docker engine \
             running?): {}",
            program.binary_name(),
            errors.join("; ")
        )
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn is_running(&self) -> bool {
        self.running
    }

    /// `docker stop`: SIGTERM, then SIGKILL after Docker's grace period.
    pub(crate) async fn stop(&mut self) {
        if let Err(error) = self.container.stop().await {
            panic!("stopping container {}: {error}", self.container.id());
        }
        self.running = false;
    }

    /// `docker stop` with no grace period, i.e. SIGKILL.
    pub(crate) async fn kill(&mut self) {
        if let Err(error) = self.container.stop_with_timeout(Some(0)).await {
            panic!("killing container {}: {error}", self.container.id());
        }
        self.running = false;
    }

    /// Starts the same container again (same port mapping, same file system) and waits until the
    /// server answers; the image's log-based wait only applies to the first start.
    pub(crate) async fn restart(&mut self) {
        if self.running {
            self.stop().await;
        }
        if let Err(error) = self.container.start().await {
            panic!("restarting container {}: {error}", self.container.id());
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self
            .program
            .answers(&self.host, self.port, Expect::Any)
            .await
        {
            assert!(
                Instant::now() < deadline,
                "container {} did not answer within {READY_TIMEOUT:?} after restart; see \
                 `docker logs {}`",
                self.container.id(),
                self.container.id()
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
        self.running = true;
    }

    /// Container logs need an async call; a synchronous tail can only say where to look.
    pub(crate) fn log_tail(&self) -> String {
        format!(
            "(server runs in container {0}: `docker logs {0}`)",
            self.container.id()
        )
    }
}

/// The image, command and port mapping for `program`.
fn request(program: Program, host_port: u16) -> ContainerRequest<GenericImage> {
    match program {
        Program::Nats => GenericImage::new("nats", "2")
            .with_exposed_port(4222.tcp())
            .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
            .with_cmd(["-js", "--store_dir", "/data"])
            .with_mapped_port(host_port, 4222.tcp()),
        Program::Redis => GenericImage::new("redis", "7")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_cmd(["redis-server", "--save", "", "--appendonly", "no"])
            .with_mapped_port(host_port, 6379.tcp()),
        Program::RedisDurable => GenericImage::new("redis", "7")
            .with_exposed_port(6379.tcp())
            .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
            .with_cmd([
                "redis-server",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .with_mapped_port(host_port, 6379.tcp()),
    }
}
