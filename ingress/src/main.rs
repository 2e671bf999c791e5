//! The `ingress` binary: configuration from the environment, then [`ingress::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main(
        "ingress",
        ingress::Config::from_env,
        |c| &c.common,
        ingress::run,
    )
    .await
}
