//! `gateway-service ingress|dispatcher|notifier`: one service as its own binary runs it
//! (configuration from the environment, `common::runtime::main`, the same `run`), built with this
//! crate so that the end-to-end and fault suites always start processes of the current code and
//! can SIGKILL them. Only the global allocator differs from the services' own `main.rs`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("ingress") => {
            common::runtime::main(
                "ingress",
                ingress::Config::from_env,
                |c| &c.common,
                ingress::run,
            )
            .await
        }
        Some("dispatcher") => {
            common::runtime::main(
                "dispatcher",
                dispatcher::Config::from_env,
                |c| &c.common,
                dispatcher::run,
            )
            .await
        }
        Some("notifier") => {
            common::runtime::main(
                "notifier",
                notifier::Config::from_env,
                |c| &c.common,
                notifier::run,
            )
            .await
        }
        _ => {
            eprintln!("usage: gateway-service ingress|dispatcher|notifier");
            ExitCode::from(2)
        }
    }
}
