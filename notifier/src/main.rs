//! The `notifier` binary: configuration from the environment, then [`notifier::run`].

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main(
        "notifier",
        notifier::Config::from_env,
        |c| &c.common,
        notifier::run,
    )
    .await
}
