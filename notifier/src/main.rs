//! The `notifier` binary: configuration from the environment, then [`notifier::run`].

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
