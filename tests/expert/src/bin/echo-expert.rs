//! `echo-expert`: the fake Agent Protocol expert as a process, for `scripts/run`.
//!
//! `EXPERT_ADDR` (default `127.0.0.1:8123`) is where it listens; with `EXPERT_API_KEY` set it
//! refuses requests that do not carry it in `EXPERT_API_KEY_HEADER` (default `x-api-key`).

use fake_expert::FakeExpert;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_target(false).init();
    let addr = std::env::var("EXPERT_ADDR").unwrap_or_else(|_| "127.0.0.1:8123".to_owned());
    let addr = match addr.parse() {
        Ok(addr) => addr,
        Err(_) => {
            eprintln!("echo-expert: invalid EXPERT_ADDR={addr:?}: expected host:port, e.g. 127.0.0.1:8123");
            return std::process::ExitCode::from(2);
        }
    };
    let expert = match FakeExpert::start_on(addr).await {
        Ok(expert) => expert,
        Err(err) => {
            eprintln!("echo-expert: cannot listen on EXPERT_ADDR={addr}: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Ok(key) = std::env::var("EXPERT_API_KEY") {
        let header =
            std::env::var("EXPERT_API_KEY_HEADER").unwrap_or_else(|_| "x-api-key".to_owned());
        expert.require_api_key(&header, &key);
    }
    tracing::info!(url = %expert.url(), "echo expert ready");
    let _ = tokio::signal::ctrl_c().await;
    std::process::ExitCode::SUCCESS
}
