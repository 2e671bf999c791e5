//! The `dispatcher` binary: configuration from the environment, then [`dispatcher::run`].

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::runtime::main(
        "dispatcher",
        dispatcher::Config::from_env,
        |c| &c.common,
        dispatcher::run,
    )
    .await
}
