//! The harness's promises, checked against the real servers: a port and a dir per server,
//! stop/kill/restart that keep JetStream data, and nothing left behind after a drop or a panic.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishError, stream};
use redis::AsyncTypedCommands;
use test_harness::{NatsServer, RedisServer};

/// A client that rides out a restart on its own, reconnecting quickly as the services do.
async fn nats_client(server: &NatsServer) -> async_nats::Client {
    async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .reconnect_delay_callback(|_attempts| Duration::from_millis(50))
        .connect(server.url())
        .await
        .expect("connecting to the test's nats-server")
}

/// A file-backed stream, the kind whose data must survive a server restart.
async fn create_events_stream(js: &jetstream::Context) {
    js.create_stream(stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("creating the EVENTS stream");
}

/// Publishes and waits for the stream's ack.
async fn publish_acked(js: &jetstream::Context, subject: &str) -> Result<u64, PublishError> {
    let payload = subject.to_owned().into();
    let ack = js.publish(subject.to_owned(), payload).await?.await?;
    Ok(ack.sequence)
}

/// Whether a process with this pid exists, zombies included (Linux `/proc`).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[tokio::test]
async fn jetstream_publish_survives_server_restart() {
    let mut server = NatsServer::start().await;
    let port = server.port();
    let js = jetstream::new(nats_client(&server).await);
    create_events_stream(&js).await;
    assert_eq!(publish_acked(&js, "events.before").await.unwrap(), 1);

    server.stop().await;
    assert!(!server.is_running());
    let mut impatient = js.clone();
    impatient.set_timeout(Duration::from_millis(500));
    assert!(
        publish_acked(&impatient, "events.during").await.is_err(),
        "a stopped server acknowledged a publish"
    );

    server.restart().await;
    assert_eq!(
        server.port(),
        port,
        "restart must keep the port clients know"
    );
    publish_acked(&js, "events.after")
        .await
        .unwrap_or_else(|error| panic!("{error}; server log:\n{}", server.log_tail()));

    let mut events = js.get_stream("EVENTS").await.unwrap();
    let state = events.info().await.unwrap().state.clone();
    let subject = |message: async_nats::jetstream::message::StreamMessage| message.subject;
    assert_eq!(
        subject(events.get_raw_message(1).await.unwrap()).as_str(),
        "events.before",
        "the message stored before the restart is gone"
    );
    assert_eq!(
        subject(events.get_raw_message(state.last_sequence).await.unwrap()).as_str(),
        "events.after"
    );
    // The client queues what it could not send while disconnected and sends it after
    // reconnecting, so the unacknowledged publish may land as message 2; nothing else may.
    if state.messages == 3 {
        let during = events.get_raw_message(2).await.unwrap();
        assert_eq!(subject(during).as_str(), "events.during");
    } else {
        assert_eq!(state.messages, 2);
    }
}

#[tokio::test]
async fn killed_nats_restarts_with_its_streams() {
    let mut server = NatsServer::start().await;
    let js = jetstream::new(nats_client(&server).await);
    create_events_stream(&js).await;
    publish_acked(&js, "events.before").await.unwrap();
    let pid = server.pid().unwrap();

    server.kill().await;
    assert!(!server.is_running());
    assert!(
        !process_exists(pid),
        "kill() left the process (or a zombie)"
    );

    server.restart().await;
    let mut events = js
        .get_stream("EVENTS")
        .await
        .expect("the stream survives a SIGKILL");
    assert_eq!(events.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn redis_restarted_after_kill_serves_new_connections_and_starts_empty() {
    let mut server = RedisServer::start().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut manager = redis::aio::ConnectionManager::new(client.clone())
        .await
        .unwrap();
    manager.set("greeting", "hello").await.unwrap();
    assert_eq!(
        manager.get("greeting").await.unwrap().as_deref(),
        Some("hello")
    );

    server.kill().await;
    assert!(!server.is_running());
    server.restart().await;

    let mut fresh = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(
        fresh.get("greeting").await.unwrap(),
        None,
        "the harness runs Redis without persistence"
    );
    fresh.set("greeting", "again").await.unwrap();
    // The manager notices the broken connection on its first command and reconnects by itself.
    let mut attempts = 0;
    let seen = loop {
        attempts += 1;
        match manager.get("greeting").await {
            Ok(value) => break value,
            Err(_) if attempts < 50 => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => panic!("the connection manager did not reconnect: {error}"),
        }
    };
    assert_eq!(seen.as_deref(), Some("again"));
}

#[tokio::test]
async fn durable_redis_keeps_acknowledged_writes_across_a_kill() {
    let mut server = RedisServer::start_durable().await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    conn.set("claim", "done").await.unwrap();

    server.kill().await;
    server.restart().await;

    let mut fresh = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(
        fresh.get("claim").await.unwrap().as_deref(),
        Some("done"),
        "a write acknowledged before SIGKILL is in the append-only file"
    );
}

#[tokio::test]
async fn servers_started_together_get_their_own_ports_and_dirs() {
    let (nats_a, nats_b, redis_a, redis_b) = tokio::join!(
        NatsServer::start(),
        NatsServer::start(),
        RedisServer::start(),
        RedisServer::start()
    );

    let ports = [nats_a.port(), nats_b.port(), redis_a.port(), redis_b.port()];
    assert_eq!(ports.iter().collect::<HashSet<_>>().len(), 4, "{ports:?}");
    assert!(
        !ports.contains(&4222) && !ports.contains(&6379),
        "{ports:?}"
    );
    let dirs: HashSet<PathBuf> = [
        nats_a.data_dir(),
        nats_b.data_dir(),
        redis_a.data_dir(),
        redis_b.data_dir(),
    ]
    .into_iter()
    .map(|dir| dir.unwrap().to_owned())
    .collect();
    assert_eq!(dirs.len(), 4);

    for nats in [&nats_a, &nats_b] {
        async_nats::connect(nats.url()).await.unwrap();
    }
    for redis in [&redis_a, &redis_b] {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        con.ping().await.unwrap();
    }
}

#[tokio::test]
async fn dropped_servers_free_their_port_dir_and_process() {
    let nats = NatsServer::start().await;
    let redis = RedisServer::start().await;
    let left_behind = [
        (
            nats.port(),
            nats.data_dir().unwrap().to_owned(),
            nats.pid().unwrap(),
        ),
        (
            redis.port(),
            redis.data_dir().unwrap().to_owned(),
            redis.pid().unwrap(),
        ),
    ];
    assert!(left_behind.iter().all(|(_, dir, _)| dir.exists()));

    drop(nats);
    drop(redis);

    for (port, dir, pid) in left_behind {
        assert!(port_is_free(port), "port {port} still taken");
        assert!(!dir.exists(), "{} still exists", dir.display());
        assert!(!process_exists(pid), "process {pid} still exists");
    }
}

#[test]
fn a_panicking_test_still_kills_its_servers() {
    let (sender, receiver) = std::sync::mpsc::channel();
    // Like a `#[tokio::test]` that fails while it holds servers.
    let failing_test = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let nats = NatsServer::start().await;
            let redis = RedisServer::start().await;
            sender
                .send([
                    (nats.pid().unwrap(), nats.data_dir().unwrap().to_owned()),
                    (redis.pid().unwrap(), redis.data_dir().unwrap().to_owned()),
                ])
                .unwrap();
            panic!("a test failing while it holds servers");
        })
    });

    assert!(failing_test.join().is_err());
    for (pid, dir) in receiver.recv().unwrap() {
        assert!(!process_exists(pid), "process {pid} outlived the panic");
        assert!(!dir.exists(), "{} outlived the panic", dir.display());
    }
}

#[tokio::test]
async fn stop_is_graceful_and_restart_is_ready_at_once() {
    let mut server = NatsServer::start().await;
    server.stop().await;
    assert!(!server.is_running());
    assert!(server.pid().is_none());
    assert!(async_nats::connect(server.url()).await.is_err());
    assert!(
        server.log_tail().contains("Server Exiting"),
        "no clean shutdown in the log:\n{}",
        server.log_tail()
    );

    server.stop().await; // Stopping twice is harmless.
    server.restart().await;
    assert!(server.is_running());
    async_nats::connect(server.url()).await.unwrap();
}
