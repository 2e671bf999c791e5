//! The `ingress` binary: configuration from the environment, then [`ingress::run`];
//! `ingress reencrypt-secrets` runs the admin command of the same name instead.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some(ingress::admin::reencrypt::COMMAND) => {
            let env = common::config::Env::from_process();
            return ingress::admin::reencrypt::main(&env).await;
        }
        Some(other) => {
            eprintln!("ingress: unknown command {other:?}; usage: ingress [reencrypt-secrets]");
            return std::process::ExitCode::from(2);
        }
    }
    common::runtime::main(
        "ingress",
        ingress::Config::from_env,
        |c| &c.common,
        ingress::run,
    )
    .await
}
