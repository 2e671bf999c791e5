//! The whole gateway on one machine for end-to-end tests, fault runs and load runs: its own
//! nats-server and redis-server (the harness), the DingTalk simulator and the fake expert
//! in-process over real HTTP, and the three services as child processes that can be SIGKILLed and
//! started again on the same ports.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::registry::Language;
use dingtalk_sim::client::{Answer, CallbackClient, RobotMessage};
use dingtalk_sim::{AppCredentials, RunningSim, SimConfig, Simulator};
use dispatcher::texts::Text;
use fake_expert::FakeExpert;
use serde_json::{json, Value};
use test_harness::{NatsServer, RedisServer};
use tokio::process::{Child, Command};

/// The simulator app behind the integration.
pub const APP_KEY: &str = "dinge2eapp";
/// Its secret (signs robot message callbacks).
pub const APP_SECRET: &str = "e2e-app-secret-0123456789";
/// The event subscription token.
pub const CALLBACK_TOKEN: &str = "e2e-token";
/// The 43-character AES key of event callbacks.
pub const AES_KEY: &str = "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij";
/// The integration id.
pub const INTEGRATION: &str = "e2e";
/// The admin API token.
const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";

/// How long a service may take to become ready. Generous: the machine is shared.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Starts of one service on fresh addresses before giving up.
const START_ATTEMPTS: usize = 5;
/// The variables naming the addresses a service listens on.
const LISTEN_VARS: [&str; 3] = ["METRICS_ADDR", "INGRESS_ADDR", "ADMIN_ADDR"];
/// What the services log (the OS's text for `EADDRINUSE`) when an address is taken.
const ADDRESS_IN_USE: &str = "Address already in use";

/// Which service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The callback endpoint.
    Ingress,
    /// Events → expert → commands.
    Dispatcher,
    /// Commands → DingTalk.
    Notifier,
}

impl Kind {
    /// What it logs (at `info`, as JSON) once it listens on each of its addresses.
    fn listening_lines(self) -> &'static [&'static str] {
        match self {
            Kind::Ingress => &[
                "\"foundation ready\"",
                "\"accepting DingTalk callbacks\"",
                "\"admin API listening\"",
            ],
            Kind::Dispatcher | Kind::Notifier => &["\"foundation ready\""],
        }
    }

    /// The subcommand of `gateway-service`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ingress => "ingress",
            Kind::Dispatcher => "dispatcher",
            Kind::Notifier => "notifier",
        }
    }
}

/// How the stack is built.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `gateway-service` binary (tests: `env!("CARGO_BIN_EXE_gateway-service")`).
    pub binary: PathBuf,
    /// Dispatcher replicas.
    pub dispatchers: usize,
    /// Notifier replicas.
    pub notifiers: usize,
    /// Extra or overriding variables for every service. The stack tells its services started
    /// by their `info` log lines (JSON): keep `RUST_LOG` and `LOG_FORMAT` as they are.
    pub env: Vec<(String, String)>,
    /// Redis with its append-only file, so that it can be killed without losing writes.
    pub durable_redis: bool,
    /// The integration's fallback expert (`xpert_id`).
    pub fallback_expert: Option<String>,
    /// Where the services' logs go (a temp dir when `None`).
    pub log_dir: Option<PathBuf>,
    /// DingTalk's calls per second per (app, API), in the simulator and in the integration's
    /// `qps_limit` alike (`None`: the defaults, 20). Load runs lift it to measure the gateway.
    pub qps_limit: Option<u32>,
}

impl Options {
    /// One replica of each service.
    pub fn new(binary: impl Into<PathBuf>) -> Self {
        Self {
            binary: binary.into(),
            dispatchers: 1,
            notifiers: 1,
            env: Vec::new(),
            durable_redis: false,
            fallback_expert: Some("fallback-expert".to_owned()),
            log_dir: None,
            qps_limit: None,
        }
    }

    /// Sets a variable for every service.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// One service process; restarted with the same environment (and ports).
pub struct Service {
    /// Which service.
    pub kind: Kind,
    /// Replica number, from 0.
    pub replica: usize,
    binary: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    child: Option<Child>,
}

/// Why a service did not become ready.
enum StartFailure {
    /// It exited because one of its addresses was taken (by another test process, or by an
    /// outgoing connection's ephemeral port) between picking it and binding it.
    AddressTaken,
    /// Anything else: a bug to report.
    Failed(String),
}

impl Service {
    /// Starts it and waits until it logged that it listens on its addresses and `/readyz`
    /// answers 200.
    async fn start(&mut self) {
        match self.try_start().await {
            Ok(()) => {}
            Err(StartFailure::AddressTaken) => panic!(
                "{} cannot listen: an address was taken meanwhile:\n{}",
                self.kind.name(),
                self.log_tail()
            ),
            Err(StartFailure::Failed(why)) => panic!("{why}"),
        }
    }

    /// [`Service::start`], telling a taken address apart from other failures.
    async fn try_start(&mut self) -> Result<(), StartFailure> {
        let logged_before = std::fs::metadata(&self.log).map_or(0, |m| m.len());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("service log file");
        let child = Command::new(&self.binary)
            .arg(self.kind.name())
            .env_clear()
            .envs(self.env.iter().cloned())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot run {}: {err}", self.binary.display()));
        self.child = Some(child);
        let url = format!("http://{}/readyz", self.metrics_addr());
        let http = reqwest::Client::new();
        let started = Instant::now();
        loop {
            let this_run = self.logged_since(logged_before);
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    if this_run.contains(ADDRESS_IN_USE) {
                        return Err(StartFailure::AddressTaken);
                    }
                    return Err(StartFailure::Failed(format!(
                        "{} exited during start-up ({status}):\n{}",
                        self.kind.name(),
                        self.log_tail()
                    )));
                }
            }
            // Only once it logged that it listens is `/readyz` known to be its own: another
            // process could hold the address it failed to bind.
            if self
                .kind
                .listening_lines()
                .iter()
                .all(|line| this_run.contains(line))
            {
                if let Ok(response) = http.get(&url).send().await {
                    if response.status().is_success() {
                        return Ok(());
                    }
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(StartFailure::Failed(format!(
                    "{} was not ready within {READY_TIMEOUT:?}:\n{}",
                    self.kind.name(),
                    self.log_tail()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Where it serves `/readyz` and `/metrics` (`METRICS_ADDR`).
    pub fn metrics_addr(&self) -> &str {
        self.var("METRICS_ADDR")
            .expect("every service has a METRICS_ADDR")
    }

    /// What it logged from byte `offset` of its log on.
    fn logged_since(&self, offset: u64) -> String {
        use std::io::{Read, Seek, SeekFrom};
        let mut text = Vec::new();
        if let Ok(mut log) = std::fs::File::open(&self.log) {
            if log.seek(SeekFrom::Start(offset)).is_ok() {
                let _ = log.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Its value of `key`.
    fn var(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Gives each of its listen addresses a new free port; returns (old, new) per address.
    fn move_addresses(&mut self) -> Vec<(String, String)> {
        let mut moved = Vec::new();
        for (key, value) in &mut self.env {
            if LISTEN_VARS.contains(&key.as_str()) {
                // The kernel may hand the port just given up out again: a move away from a
                // taken address must not land on it.
                let new = std::iter::repeat_with(free_addr)
                    .find(|new| new != value)
                    .expect("an endless supply of addresses");
                moved.push((std::mem::replace(value, new.clone()), new));
            }
        }
        moved
    }

    /// Sets `key` to `new` where it is `old`.
    fn change(&mut self, key: &str, old: &str, new: &str) {
        for (k, value) in &mut self.env {
            if k == key && value == old {
                new.clone_into(value);
            }
        }
    }

    /// SIGKILL, and wait for the exit: a crash.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, and wait (at most 30 s) for the exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()
                    .await;
            }
            if tokio::time::timeout(Duration::from_secs(30), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }

    /// Starts it again after `kill` or `stop`, same ports and environment.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Its log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// The running gateway.
pub struct Stack {
    /// NATS with JetStream.
    pub nats: NatsServer,
    /// Redis.
    pub redis: RedisServer,
    /// DingTalk.
    pub sim: RunningSim,
    /// The expert.
    pub expert: FakeExpert,
    /// Every service process: the ingress first, then dispatchers, then notifiers.
    pub services: Vec<Service>,
    /// The ingress's public base URL.
    pub ingress_url: String,
    /// The admin API's base URL.
    pub admin_url: String,
    /// The callback sender acting as DingTalk.
    pub client: CallbackClient,
    http: reqwest::Client,
    _logs: Option<tempfile::TempDir>,
}

fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("bound").to_string()
}

/// Starts `services[index]`, moving it to fresh addresses while one of them turns out taken;
/// the services' `PUBLIC_BASE_URL` follows the ingress's move (it starts first).
async fn start_on_free_addresses(services: &mut [Service], index: usize) {
    for _ in 1..START_ATTEMPTS {
        match services[index].try_start().await {
            Ok(()) => return,
            Err(StartFailure::AddressTaken) => move_to_free_addresses(services, index),
            Err(StartFailure::Failed(why)) => panic!("{why}"),
        }
    }
    services[index].start().await;
}

/// Gives `services[index]` fresh listen addresses; every `PUBLIC_BASE_URL` naming one of its
/// old addresses follows.
fn move_to_free_addresses(services: &mut [Service], index: usize) {
    for (old, new) in services[index].move_addresses() {
        for service in services.iter_mut() {
            service.change(
                "PUBLIC_BASE_URL",
                &format!("http://{old}"),
                &format!("http://{new}"),
            );
        }
    }
}

impl Stack {
    /// Starts everything and registers the integration (with a trigger binding to
    /// `trigger-expert`) through the admin API.
    pub async fn start(options: Options) -> Stack {
        let nats = NatsServer::start().await;
        let redis = if options.durable_redis {
            RedisServer::start_durable().await
        } else {
            RedisServer::start().await
        };
        let mut sim_config = SimConfig::local().with_app(AppCredentials::new(APP_KEY, APP_SECRET));
        if let Some(qps) = options.qps_limit {
            sim_config.limits.qps_per_app_api = qps;
        }
        let sim = Simulator::start(sim_config)
            .await
            .expect("the simulator starts");
        let expert = FakeExpert::start().await;
        let (logs, log_dir) = match &options.log_dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).expect("log dir");
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::tempdir().expect("a temp dir for logs");
                let path = temp.path().to_owned();
                (Some(temp), path)
            }
        };
        let ingress_addr = free_addr();
        let mut common: Vec<(String, String)> = [
            ("NATS_URL", nats.url()),
            ("REDIS_URL", redis.url()),
            ("DINGTALK_API_URL", sim.base_url()),
            ("DINGTALK_OAPI_URL", sim.base_url()),
            ("EXPERT_API_URL", expert.url()),
            ("PUBLIC_BASE_URL", format!("http://{ingress_addr}")),
            ("RUST_LOG", "info".to_owned()),
            ("LOG_FORMAT", "json".to_owned()),
            ("SHUTDOWN_TIMEOUT", "5s".to_owned()),
            ("REGISTRY_CACHE_TTL", "1s".to_owned()),
            ("DISPATCHER_ACK_WAIT", "4s".to_owned()),
            ("DISPATCHER_CLAIM_LEASE", "2s".to_owned()),
            ("EXPERT_RETRY_BACKOFF", "500ms".to_owned()),
            ("EXPERT_TIMEOUT", "20s".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in &options.env {
            common.retain(|(k, _)| k != key);
            common.push((key.clone(), value.clone()));
        }
        let mut services = Vec::new();
        let mut add = |kind: Kind, replica: usize, extra: Vec<(String, String)>| {
            let mut env = common.clone();
            env.push(("METRICS_ADDR".to_owned(), free_addr()));
            env.extend(extra);
            services.push(Service {
                kind,
                replica,
                binary: options.binary.clone(),
                env,
                log: log_dir.join(format!("{}-{replica}.log", kind.name())),
                child: None,
            });
        };
        add(
            Kind::Ingress,
            0,
            vec![
                ("INGRESS_ADDR".to_owned(), ingress_addr),
                ("ADMIN_ADDR".to_owned(), free_addr()),
                ("ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
            ],
        );
        for replica in 0..options.dispatchers {
            add(Kind::Dispatcher, replica, Vec::new());
        }
        for replica in 0..options.notifiers {
            add(Kind::Notifier, replica, Vec::new());
        }
        for index in 0..services.len() {
            start_on_free_addresses(&mut services, index).await;
        }
        let ingress = &services[0];
        let ingress_url = format!("http://{}", ingress.var("INGRESS_ADDR").expect("set above"));
        let admin_url = format!("http://{}", ingress.var("ADMIN_ADDR").expect("set above"));
        let stack = Stack {
            nats,
            redis,
            sim,
            expert,
            services,
            ingress_url,
            admin_url,
            client: CallbackClient::new(Duration::from_secs(10)).expect("an HTTP client"),
            http: reqwest::Client::new(),
            _logs: logs,
        };
        let mut integration = json!({
            "name": "End to end",
            "client_id": APP_KEY,
            "client_secret": APP_SECRET,
            "callback_token": CALLBACK_TOKEN,
            "callback_aes_key": AES_KEY,
            "preferred_language": "en",
        });
        if let Some(qps) = options.qps_limit {
            integration["qps_limit"] = json!(qps);
        }
        if let Some(fallback) = &options.fallback_expert {
            integration["xpert_id"] = json!(fallback);
        }
        stack
            .admin(
                reqwest::Method::PUT,
                &format!("/api/dingtalk/integrations/{INTEGRATION}"),
                &integration,
            )
            .await;
        stack
            .admin(
                reqwest::Method::PUT,
                &format!("/api/dingtalk/integrations/{INTEGRATION}/trigger"),
                &json!({"xpert_id": "trigger-expert"}),
            )
            .await;
        stack
    }

    /// Calls the admin API; panics unless it answers 2xx. Returns the body.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.admin_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|err| panic!("{method} {path}: {err}"));
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert!(
            status.is_success(),
            "{method} {path} answered {status}: {text}"
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    /// The integration's callback URL.
    pub fn webhook_url(&self) -> String {
        format!("{}/api/dingtalk/webhook/{INTEGRATION}", self.ingress_url)
    }

    /// A private text message from `user001`, its session webhook on the simulator.
    pub fn message(&self, text: &str) -> RobotMessage {
        RobotMessage::text(APP_KEY, text, self.sim.base_url())
    }

    /// Posts a robot message as DingTalk does (signed, now).
    pub async fn send(&self, message: &RobotMessage) -> Answer {
        self.client
            .send_robot_message(&self.webhook_url(), APP_SECRET, message)
            .await
            .expect("the ingress answers")
    }

    /// The answer shown for `message` once it stopped changing (at most `limit`). The card's
    /// "thinking…" placeholder is not an answer however long it stays unchanged: on a loaded
    /// machine the expert's answer can take longer than the settling time to replace it.
    pub async fn reply(&self, message: &RobotMessage, limit: Duration) -> Option<String> {
        dingtalk_sim::client::await_reply(
            &self.http,
            &self.sim.base_url(),
            message,
            0,
            limit,
            Duration::from_millis(1500),
            |text| {
                [Language::En, Language::ZhHans]
                    .into_iter()
                    .any(|language| text == Text::Thinking.in_language(language))
            },
            |_| {},
        )
        .await
        .expect("the simulator's record is readable")
    }

    /// The services of one kind.
    pub fn of(&mut self, kind: Kind) -> impl Iterator<Item = &mut Service> {
        self.services.iter_mut().filter(move |s| s.kind == kind)
    }

    /// The first service of a kind.
    pub fn service(&mut self, kind: Kind) -> &mut Service {
        self.of(kind).next().expect("a service of that kind")
    }

    /// A NATS client of the stack's server.
    pub async fn nats_client(&self) -> async_nats::Client {
        async_nats::connect(self.nats.url())
            .await
            .expect("NATS is reachable")
    }

    /// Stops every service gracefully (SIGTERM).
    pub async fn stop(&mut self) {
        for service in &mut self.services {
            service.stop().await;
        }
    }

    /// The last log lines of every service, for a failing assertion.
    pub fn logs(&self) -> String {
        self.services
            .iter()
            .map(|s| format!("--- {} {}\n{}", s.kind.name(), s.replica, s.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Waits (at most `limit`, polling) until `check` returns `Some`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A service whose binary is a shell script printing `says` after `seconds` and exiting 1.
    fn failing(dir: &Path, kind: Kind, seconds: f32, says: &str) -> Service {
        let script = dir.join(format!("{}.sh", kind.name()));
        let text = format!("#!/bin/sh\nsleep {seconds}\necho '{says}'\nexit 1\n");
        std::fs::write(&script, text).unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let ingress_addr = free_addr();
        Service {
            kind,
            replica: 0,
            binary: script,
            env: vec![
                (
                    "PUBLIC_BASE_URL".to_owned(),
                    format!("http://{ingress_addr}"),
                ),
                ("METRICS_ADDR".to_owned(), free_addr()),
                ("INGRESS_ADDR".to_owned(), ingress_addr),
            ],
            log: dir.join(format!("{}.log", kind.name())),
            child: None,
        }
    }

    #[tokio::test]
    async fn a_taken_address_is_told_apart_from_other_start_failures() {
        let dir = tempfile::tempdir().unwrap();
        let mut taken = failing(
            dir.path(),
            Kind::Ingress,
            0.0,
            "cannot listen on INGRESS_ADDR=127.0.0.1:1: Address already in use (os error 98)",
        );
        assert!(matches!(
            taken.try_start().await,
            Err(StartFailure::AddressTaken)
        ));
        // Same log file, another failure: only what this start logged counts.
        taken.binary = failing(dir.path(), Kind::Dispatcher, 0.0, "NATS_URL is not a URL").binary;
        match taken.try_start().await {
            Err(StartFailure::Failed(why)) => assert!(why.contains("NATS_URL"), "{why}"),
            _ => panic!("a bad configuration is no taken address"),
        }
    }

    /// The address it could not bind answers `/readyz` all the same (another test's service
    /// holds it): that is no start.
    #[tokio::test]
    async fn a_stranger_answering_on_its_metrics_address_is_not_taken_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let stranger = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let taken = stranger.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut conn, _)) = stranger.accept().await {
                let mut request = [0u8; 1024];
                let _ = conn.read(&mut request).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        // It fails a moment after starting, as a service does once NATS and Redis answered.
        let mut service = failing(
            dir.path(),
            Kind::Notifier,
            0.5,
            &format!("cannot listen on METRICS_ADDR={taken}: Address already in use"),
        );
        let own = service.metrics_addr().to_owned();
        service.change("METRICS_ADDR", &own, &taken);
        assert!(matches!(
            service.try_start().await,
            Err(StartFailure::AddressTaken)
        ));
    }

    #[test]
    fn moving_the_ingress_moves_every_services_public_base_url_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut services = vec![
            failing(dir.path(), Kind::Ingress, 0.0, "x"),
            failing(dir.path(), Kind::Notifier, 0.0, "x"),
        ];
        let before = services[0].var("INGRESS_ADDR").unwrap().to_owned();
        let base_url = format!("http://{before}");
        let notifier = &mut services[1];
        let own = notifier.var("PUBLIC_BASE_URL").unwrap().to_owned();
        notifier.change("PUBLIC_BASE_URL", &own, &base_url);
        let metrics_before = services[0].metrics_addr().to_owned();
        move_to_free_addresses(&mut services, 0);
        assert_ne!(services[0].metrics_addr(), metrics_before);
        let ingress = services[0].var("INGRESS_ADDR").unwrap().to_owned();
        assert_ne!(before, ingress);
        for service in &services {
            assert_eq!(
                service.var("PUBLIC_BASE_URL"),
                Some(format!("http://{ingress}").as_str())
            );
        }
    }
}
