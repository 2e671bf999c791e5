//! The `dingtalk-sim` binary: parse the command line, run it.

use clap::Parser as _;
use dingtalk_sim::cli::Cli;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    Cli::parse().run().await
}
