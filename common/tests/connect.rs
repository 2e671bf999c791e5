//! Connecting as production does: several NATS seed servers in `NATS_URL`, and Redis over TLS
//! (`rediss://`), verified against the CA in `SSL_CERT_FILE`.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use test_harness::NatsServer;

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn nats_url_may_list_seed_servers_and_the_first_reachable_one_is_used() {
    let nats = NatsServer::start().await;
    let down = format!("nats://127.0.0.1:{}", free_port());
    let client = common::runtime::connect_nats(&format!("{down},{}", nats.url()), "test")
        .await
        .expect("connects through the second seed");
    client.publish("probe", "x".into()).await.unwrap();
    client.flush().await.unwrap();

    let err = common::runtime::connect_nats(&down, "test")
        .await
        .expect_err("nothing listens there");
    assert!(err.to_string().contains("NATS_URL"), "{err}");
}

#[tokio::test]
async fn a_seed_that_accepts_but_never_answers_does_not_use_up_the_time_of_the_next() {
    let nats = NatsServer::start().await;
    // Accepts connections and says nothing, as a stalled or half-dead node does.
    let silent = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let silent_url = format!("nats://{}", silent.local_addr().unwrap());
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    // The client shuffles the seeds; here the silent one is tried first, which uses up a whole
    // seed's bound before the answering one is tried.
    let in_order = async_nats::ConnectOptions::new().retain_servers_order();
    let client = common::runtime::connect_nats_with(
        in_order,
        &format!("{silent_url},{}", nats.url()),
        "test",
    )
    .await
    .expect("connects through the answering seed");
    client.flush().await.unwrap();
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl {args:?}");
}

/// A CA (`ca.pem`) and a certificate it signed for localhost (`server.pem`, `server.key`).
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=gateway test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A redis-server answering TLS only, on a free port.
fn tls_redis(dir: &Path) -> (Killed, u16) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", "0", "--tls-port", &port.to_string()])
        .args([
            "--tls-cert-file",
            "server.pem",
            "--tls-key-file",
            "server.key",
        ])
        .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
        .args(["--save", "", "--appendonly", "no", "--dir", "."])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs");
    let started = Instant::now();
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server never listened"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (Killed(child), port)
}

#[tokio::test]
async fn redis_is_reached_over_tls_with_a_rediss_url() {
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (_redis, port) = tls_redis(dir.path());
    let url = format!("rediss://localhost:{port}/0");

    // A server certificate no trusted CA signed (the system's CAs) is refused.
    std::env::remove_var("SSL_CERT_FILE");
    assert!(common::redis::connect(&url).await.is_err());

    // With the CA trusted, as an operator sets it for a private CA.
    std::env::set_var("SSL_CERT_FILE", dir.path().join("ca.pem"));
    let mut redis = common::redis::connect(&url).await.expect("TLS connection");
    common::redis::ping(&mut redis).await.unwrap();
}
