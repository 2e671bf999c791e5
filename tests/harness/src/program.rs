//! What differs between the servers the harness runs: binary, arguments, URL scheme, and the probe
//! that tells a ready server from a port that merely accepts connections.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// How long a server may take to answer after it was launched. Generous: the machine is shared.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause between readiness probes; servers here start in tens of milliseconds.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// The file name of NATS's configuration in its directory (see [`Program::config_file`]).
const NATS_CONFIG: &str = "nats.conf";

/// Bound on one probe, so a peer that accepts but never answers cannot stall the readiness loop.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The servers the harness knows how to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Program {
    Nats,
    Redis,
    /// Redis with its append-only file on (`appendfsync always`), so a killed server restarts
    /// with every write it acknowledged, as a production Redis with AOF does.
    RedisDurable,
}

/// Who must answer a readiness probe.
///
/// A port picked as free can be taken by someone else before our server binds it. A bare TCP
/// connect would then succeed against the wrong process, so a local server has to prove it is ours.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Expect<'a> {
    /// A child process of this test: nats-server announces its `--name`, redis-server its pid.
    Local { name: &'a str, pid: u32 },
    /// A container behind a published port, where any server of the right kind is ours.
    #[cfg_attr(not(feature = "testcontainers"), allow(dead_code))]
    Any,
}

impl Program {
    /// File name of the binary, also the name of its Debian package.
    pub(crate) fn binary_name(self) -> &'static str {
        match self {
            Program::Nats => "nats-server",
            Program::Redis | Program::RedisDurable => "redis-server",
        }
    }

    /// Where the Debian package installs the binary; `/usr/sbin` is often missing from a user's PATH.
    fn debian_path(self) -> &'static str {
        match self {
            Program::Nats => "/usr/sbin/nats-server",
            Program::Redis | Program::RedisDurable => "/usr/bin/redis-server",
        }
    }

    /// URL scheme the clients expect.
    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Program::Nats => "nats",
            Program::Redis | Program::RedisDurable => "redis",
        }
    }

    /// The binary to run: the first one on PATH, else the Debian location; panics with the install
    /// command when neither exists, because no test can run without it.
    pub(crate) fn find_binary(self) -> PathBuf {
        let name = self.binary_name();
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .chain([PathBuf::from(self.debian_path())])
            .find(|candidate| candidate.is_file())
            .unwrap_or_else(|| {
                panic!(
                    "`{name}` is neither on PATH nor at {}; install the Debian package `{name}`: \
                     apt-get install -y nats-server redis-server",
                    self.debian_path()
                )
            })
    }

    /// A configuration file (name, content) written into the server's directory before each
    /// start and passed on its command line, if the server needs one.
    ///
    /// NATS sizes JetStream's storage limit from the disk's free space at start-up and refuses a
    /// stream whose `max_bytes` does not fit in what is left of it. The services provision four
    /// streams of `NATS_MAX_BYTES` (1 GiB by default) each, so on a busy machine with a nearly
    /// full disk a test server would refuse them ("insufficient storage resources") although the
    /// tests store a few megabytes. A fixed limit makes the tests independent of the free space.
    pub(crate) fn config_file(self) -> Option<(&'static str, &'static str)> {
        match self {
            Program::Nats => Some((
                NATS_CONFIG,
                "jetstream {\n  max_file_store: 1TB\n  max_memory_store: 1GB\n}\n",
            )),
            Program::Redis | Program::RedisDurable => None,
        }
    }

    /// Command line for a local server on `port` that keeps all its files in `dir`.
    ///
    /// Redis runs without persistence, so a restarted Redis starts empty (`RedisDurable` keeps an
    /// append-only file in `dir`); NATS keeps its
    /// JetStream store in `dir`, so streams and messages survive `restart()`.
    pub(crate) fn args(self, port: u16, dir: &Path, name: &str) -> Vec<OsString> {
        let port = port.to_string();
        let mut args: Vec<OsString> = match self {
            Program::Nats => vec![
                "--config".into(),
                dir.join(NATS_CONFIG).into_os_string(),
                "-js".into(),
                "--addr".into(),
                "127.0.0.1".into(),
                "--port".into(),
                port.into(),
                "--server_name".into(),
                name.into(),
                "--store_dir".into(),
            ],
            Program::Redis => vec![
                "--port".into(),
                port.into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "no".into(),
                "--dir".into(),
            ],
            Program::RedisDurable => vec![
                "--port".into(),
                port.into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
                "--dir".into(),
            ],
        };
        args.push(dir.as_os_str().to_owned());
        args
    }

    /// Whether the expected server answers on `host:port` in its own protocol.
    pub(crate) async fn answers(self, host: &str, port: u16, expect: Expect<'_>) -> bool {
        let probe = async {
            let stream = TcpStream::connect((host, port)).await.ok()?;
            match self {
                Program::Nats => nats_answers(stream, expect).await,
                Program::Redis | Program::RedisDurable => redis_answers(stream, expect).await,
            }
        };
        tokio::time::timeout(PROBE_TIMEOUT, probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    }
}

/// NATS greets every client with an `INFO {json}` line once it accepts clients, and only after
/// JetStream has loaded its store.
async fn nats_answers(stream: TcpStream, expect: Expect<'_>) -> Option<bool> {
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).await.ok()?;
    let ours = match expect {
        Expect::Local { name, .. } => line.contains(&format!("\"server_name\":\"{name}\"")),
        Expect::Any => true,
    };
    Some(line.starts_with("INFO ") && line.contains("\"jetstream\":true") && ours)
}

/// Redis answers `INFO` with a bulk string that names the server's pid and whether it is still
/// loading its data set (a durable server replays its append-only file after a restart, and
/// answers every data command with `-LOADING` meanwhile, though `INFO` already works).
async fn redis_answers(mut stream: TcpStream, expect: Expect<'_>) -> Option<bool> {
    stream.write_all(b"INFO\r\n").await.ok()?;
    let mut reader = BufReader::new(stream);
    let mut header = String::new();
    reader.read_line(&mut header).await.ok()?;
    // `$<len>\r\n`; an error such as `-LOADING` means not ready yet.
    let len: usize = header.strip_prefix('$')?.trim_end().parse().ok()?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await.ok()?;
    let body = String::from_utf8_lossy(&body);
    let ours = match expect {
        Expect::Local { pid, .. } => body.contains(&format!("process_id:{pid}\r\n")),
        Expect::Any => true,
    };
    Some(body.contains("redis_version:") && body.contains("\r\nloading:0\r\n") && ours)
}
