//! The command line: `probe`, `dlq list`, `dlq replay`. NATS and Redis come from the same
//! `NATS_URL` / `REDIS_URL` variables as the services (or `--nats-url` / `--redis-url`).

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::dlq::{self, Filter, Verdict};

/// Operate a DingTalk gateway deployment.
#[derive(Debug, Parser)]
#[command(name = "gatewayctl", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// GET a URL and succeed only on a 2xx answer (the container health check).
    Probe {
        /// e.g. http://127.0.0.1:9100/readyz
        url: String,
    },
    /// Inspect and replay dead letters (stream DINGTALK_DLQ).
    #[command(subcommand)]
    Dlq(DlqCommand),
}

/// `gatewayctl dlq …`.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead letters, oldest first.
    List(Selection),
    /// Republish dead letters to their original subject (see docs/operations.md).
    Replay {
        /// Selection of dead letters.
        #[command(flatten)]
        selection: Selection,
        /// Report what would be replayed or skipped, and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Redis holding the notifier's command records.
        #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
        redis_url: String,
    },
}

/// Which dead letters, and where the bus is.
#[derive(Debug, Args)]
pub struct Selection {
    /// NATS server with JetStream.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Only this stage: dispatcher or notifier.
    #[arg(long, value_parser = ["dispatcher", "notifier"])]
    pub stage: Option<String>,
    /// Only this integration id.
    #[arg(long)]
    pub integration: Option<String>,
    /// Only dead letters at or after this time (RFC 3339, or a duration ago such as 2h).
    #[arg(long, value_parser = parse_time)]
    pub since: Option<OffsetDateTime>,
    /// Only dead letters before this time (RFC 3339, or a duration ago).
    #[arg(long, value_parser = parse_time)]
    pub until: Option<OffsetDateTime>,
    /// Only this reason code (e.g. malformed, max_deliveries, unknown_integration).
    #[arg(long)]
    pub reason: Option<String>,
    /// At most this many dead letters.
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
}

impl Selection {
    fn filter(&self) -> Filter {
        Filter {
            stage: self.stage.clone(),
            integration: self.integration.clone(),
            since: self.since,
            until: self.until,
            reason: self.reason.clone(),
        }
    }
}

/// `2026-11-25T10:00:00Z` or `90m` (that long ago).
pub fn parse_time(raw: &str) -> Result<OffsetDateTime, String> {
    if let Ok(time) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Ok(time);
    }
    humantime::parse_duration(raw)
        .map(|ago| OffsetDateTime::now_utc() - ago)
        .map_err(|_| format!("{raw:?}: expected an RFC 3339 time or a duration such as 2h"))
}

impl Cli {
    /// Runs the command; the exit code says whether it worked.
    pub async fn run(self) -> ExitCode {
        let result = match self.command {
            Command::Probe { url } => crate::probe::probe(&url)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            Command::Dlq(DlqCommand::List(selection)) => list(&selection).await,
            Command::Dlq(DlqCommand::Replay {
                selection,
                dry_run,
                redis_url,
            }) => replay(&selection, dry_run, &redis_url).await,
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("gatewayctl: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

async fn list(selection: &Selection) -> Result<(), String> {
    let js = dlq::connect(&selection.nats_url)
        .await
        .map_err(|e| e.to_string())?;
    let letters = dlq::read(&js, &selection.filter(), selection.limit)
        .await
        .map_err(|e| e.to_string())?;
    for letter in &letters {
        println!("{}", letter.summary());
    }
    println!("{} dead letter(s)", letters.len());
    Ok(())
}

async fn replay(selection: &Selection, dry_run: bool, redis_url: &str) -> Result<(), String> {
    let js = dlq::connect(&selection.nats_url)
        .await
        .map_err(|e| e.to_string())?;
    let redis = common::redis::connect(redis_url).await.map_err(|err| {
        format!(
            "cannot connect to Redis at REDIS_URL={}: {err}",
            common::config::redact_url(redis_url)
        )
    })?;
    let records = notifier::records::Records::new(redis);
    let outcomes = dlq::replay(&js, &records, &selection.filter(), selection.limit, dry_run)
        .await
        .map_err(|e| e.to_string())?;
    let (mut replayed, mut skipped) = (0, 0);
    for outcome in &outcomes {
        match &outcome.verdict {
            Verdict::Replay {
                subject, msg_id, ..
            } => {
                replayed += 1;
                let done = match (dry_run, outcome.published) {
                    (true, _) => "would replay",
                    (false, true) => "replayed",
                    (false, false) => "left (its record changed meanwhile)",
                };
                println!("#{} {done} to {subject} as {msg_id}", outcome.sequence);
            }
            Verdict::Skip(why) => {
                skipped += 1;
                println!("#{} skipped: {why}", outcome.sequence);
            }
        }
    }
    let mode = if dry_run {
        " (dry run: nothing changed)"
    } else {
        ""
    };
    println!("{replayed} to replay, {skipped} skipped{mode}");
    Ok(())
}
