//! The `gatewayctl` binary: parse the command line, run it, exit with its status.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    gatewayctl::cli::Cli::parse().run().await
}
