//! A server binary run as a child process of the test: its own port, temp dir and log file, and a
//! `Drop` that kills and reaps it even when the test panics.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::port::free_port;
use crate::program::{Expect, Program, POLL_INTERVAL, READY_TIMEOUT};

/// Attempts before giving up when a freshly picked port turns out to be taken.
const START_ATTEMPTS: usize = 5;

/// How long a SIGTERMed server may take to shut down before it is SIGKILLed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `Drop` waits, blocking, for a SIGKILLed child to be reaped.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of the server log included in panics and in `log_tail`.
const LOG_TAIL_LINES: usize = 60;

/// File in the temp dir that collects the server's stdout and stderr across restarts.
const LOG_FILE: &str = "server.log";

/// Failure message when a launched server never answers.
const NOT_READY: &str = "runs but did not answer within the readiness timeout";

/// Host the local servers bind to and the probes connect to.
pub(crate) const HOST: &str = "127.0.0.1";

/// Makes server names unique within this test binary; the pid makes them unique across binaries.
static NEXT_NAME: AtomicU64 = AtomicU64::new(0);

/// Why a launch did not produce a ready server.
#[derive(Debug)]
enum LaunchError {
    /// The server exited before it answered, usually because the port was taken meanwhile.
    Exited(ExitStatus),
    /// The server runs but never answered; retrying would not help.
    NotReady,
}

/// One server process, plus the port and directory it keeps across restarts.
#[derive(Debug)]
pub(crate) struct LocalServer {
    program: Program,
    binary: PathBuf,
    /// Unique per server; nats-server announces it, which proves the port is really ours.
    name: String,
    port: u16,
    /// `None` while stopped. Behind a lock only so that `is_running(&self)` can reap a crashed child.
    child: Mutex<Option<Child>>,
    /// Data and log. `Drop` kills the child before this field removes the directory.
    dir: TempDir,
}

impl LocalServer {
    /// Starts `program` on a free port, retrying with new ports when one gets taken under us.
    pub(crate) async fn start(program: Program) -> LocalServer {
        LocalServer::start_on_ports(program, std::iter::repeat_with(free_port)).await
    }

    /// `start` with the candidate ports given, so tests can force a taken port.
    pub(crate) async fn start_on_ports(
        program: Program,
        ports: impl IntoIterator<Item = u16>,
    ) -> LocalServer {
        let binary = program.find_binary();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", program.binary_name()))
            .tempdir()
            .expect("creating a temp dir for the server");
        let name = format!(
            "test-harness-{}-{}",
            std::process::id(),
            NEXT_NAME.fetch_add(1, Ordering::Relaxed)
        );
        let mut server = LocalServer {
            program,
            binary,
            name,
            port: 0,
            child: Mutex::new(None),
            dir,
        };
        let mut last_exit = None;
        for port in ports.into_iter().take(START_ATTEMPTS) {
            server.port = port;
            match server.launch().await {
                Ok(()) => return server,
                Err(LaunchError::Exited(status)) => last_exit = Some(status),
                Err(LaunchError::NotReady) => server.fail(NOT_READY),
            }
        }
        server.fail(&format!(
            "exited during start-up on each of the ports tried (last exit: {last_exit:?})"
        ))
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id while running; `None` once stopped or exited.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.lock_child().as_ref().and_then(Child::id)
    }

    /// Whether the process is alive; a crashed process is reaped here and reported as stopped.
    pub(crate) fn is_running(&self) -> bool {
        let mut child = self.lock_child();
        let alive = child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)));
        if !alive {
            *child = None;
        }
        alive
    }

    /// SIGTERM, then wait for the exit; SIGKILL if the server takes longer than `STOP_TIMEOUT`.
    pub(crate) async fn stop(&mut self) {
        let Some(mut child) = self.take_child() else {
            return;
        };
        // `id()` is `None` once the child was reaped, and only then could the pid be reused.
        if let Some(pid) = child.id() {
            send_sigterm(pid).await;
            if tokio::time::timeout(STOP_TIMEOUT, child.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        check_killed(child.kill().await);
    }

    /// SIGKILL and wait for the exit: the crash a fault test wants.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.take_child() {
            check_killed(child.kill().await);
        }
    }

    /// Stops the server if it runs and starts it again on the same port and directory.
    pub(crate) async fn restart(&mut self) {
        self.stop().await;
        let mut last_exit = None;
        for attempt in 1..=START_ATTEMPTS {
            match self.launch().await {
                Ok(()) => return,
                Err(LaunchError::Exited(status)) => last_exit = Some(status),
                Err(LaunchError::NotReady) => self.fail(NOT_READY),
            }
            tokio::time::sleep(Duration::from_millis(100) * attempt as u32).await;
        }
        self.fail(&format!(
            "exited {START_ATTEMPTS} times on restart (last: {last_exit:?}); the port must stay \
             the same, so if another process took it the test cannot go on"
        ))
    }

    /// The last lines of the server's output, for failure messages.
    ///
    /// Reads a small file synchronously: meant for the moment a test is failing anyway.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_else(|error| {
            format!("(cannot read {}: {error})", self.log_path().display())
        });
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
    }

    /// Spawns the server on `self.port` and waits until it answers as itself.
    async fn launch(&mut self) -> Result<(), LaunchError> {
        let mut child = self
            .spawn()
            .await
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", self.binary.display()));
        let pid = child
            .id()
            .expect("a child that was just spawned has not been reaped");
        let expect = Expect::Local {
            name: &self.name,
            pid,
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        let outcome = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Err(LaunchError::Exited(status));
            }
            if self.program.answers(HOST, self.port, expect).await {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(LaunchError::NotReady);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        // Kept even on failure, so that `Drop` kills a server that runs but never answered.
        *self.child.get_mut().unwrap_or_else(PoisonError::into_inner) = Some(child);
        outcome
    }

    async fn spawn(&self) -> io::Result<Child> {
        if let Some((name, content)) = self.program.config_file() {
            tokio::fs::write(self.dir.path().join(name), content).await?;
        }
        let args = self.program.args(self.port, self.dir.path(), &self.name);
        let mut log = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .await?
            .into_std()
            .await;
        writeln!(
            log,
            "---- test-harness: {} {}",
            self.binary.display(),
            args.iter()
                .map(|arg| arg.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        )?;
        Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // A second line of defence behind `Drop`, e.g. when a launch future is cancelled.
            .kill_on_drop(true)
            .spawn()
    }

    pub(crate) fn log_path(&self) -> PathBuf {
        self.dir.path().join(LOG_FILE)
    }

    fn take_child(&mut self) -> Option<Child> {
        self.child
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn lock_child(&self) -> std::sync::MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Panics with the log tail; the unwinding drop then kills the process.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "{} on {HOST}:{} {what}; log {}:\n{}",
            self.program.binary_name(),
            self.port,
            self.log_path().display(),
            self.log_tail()
        )
    }
}

impl Drop for LocalServer {
    /// Kills and reaps the child synchronously (async drop does not exist), so no process and no
    /// zombie outlives the handle; then the temp dir field is removed.
    fn drop(&mut self) {
        let Some(mut child) = self.take_child() else {
            return;
        };
        if child.start_kill().is_err() {
            return; // Already exited and reaped.
        }
        let deadline = Instant::now() + DROP_REAP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                _ => return,
            }
        }
        // Still not reaped: `kill_on_drop` and tokio's orphan reaping take it from here.
    }
}

/// Asks the server to shut down cleanly, through the `kill` command so the crate stays free of
/// `unsafe` and of a signals dependency. The caller still owns the unreaped child, so the pid
/// cannot have been reused.
async fn send_sigterm(pid: u32) {
    // A failure status means the process is already gone, which is what stop() wants anyway.
    let _exit_status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .unwrap_or_else(|error| {
            panic!("stop() sends SIGTERM with the `kill` command (Debian package procps): {error}")
        });
}

/// A failed kill of an already exited child is fine; the wait inside `kill` reaped it either way.
fn check_killed(result: io::Result<()>) {
    if let Err(error) = result {
        assert_eq!(
            error.kind(),
            io::ErrorKind::InvalidInput,
            "killing the server failed: {error}"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// Another process on our port answers, but not as our server: that must count as a failed
    /// launch (the server exits on the bind error), never as ready.
    #[tokio::test]
    async fn a_port_taken_by_a_stranger_is_skipped_for_a_fresh_one() {
        for program in [Program::Nats, Program::Redis] {
            let stranger = TcpListener::bind((HOST, 0)).unwrap();
            let taken = stranger.local_addr().unwrap().port();

            let server = LocalServer::start_on_ports(program, [taken, free_port()]).await;

            assert_ne!(server.port(), taken);
            assert!(server.is_running());
            assert!(server.log_tail().contains(&taken.to_string()));
        }
    }
}
