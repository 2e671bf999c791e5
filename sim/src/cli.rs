//! The `dingtalk-sim` command line: `serve` (the default) runs the simulator from environment
//! variables; the other subcommands act as DingTalk towards a callback receiver.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use common::config::{Env, LogFormat};
use common::secret::Secret;
use common::shutdown::{self, Shutdown};
use serde::Serialize;
use serde_json::Value;

use crate::client::{
    await_reply, check_url, run_load, CallbackClient, CardAction, EventSigner, LoadPlan,
    LoadTarget, RobotMessage,
};
use crate::config::SimConfig;
use crate::directory::Directory;
use crate::server::Simulator;

/// How long one callback request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A streamed answer is taken as complete once it has not changed for this long (the gateway
/// updates a card at most once a second by default).
const REPLY_SETTLE: Duration = Duration::from_secs(3);

/// A DingTalk simulator: serves DingTalk's API (serve), or sends DingTalk's callbacks.
#[derive(Debug, Parser)]
#[command(name = "dingtalk-sim", version, about)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the simulated API (configured by SIM_* environment variables, see README).
    Serve,
    /// Post one signed robot message callback.
    SendRobotMessage(RobotMessageArgs),
    /// Post one encrypted event callback (check_url unless --event is given).
    SendEvent(EventArgs),
    /// Post one card action callback.
    SendCardAction(CardActionArgs),
    /// Post robot messages (or events) at a rate for a while, redelivering non-200 answers.
    Load(LoadArgs),
}

/// Options shared by robot message sends.
#[derive(Debug, Args)]
pub struct RobotMessageArgs {
    /// The receiver's URL (the robot's message receiving address).
    #[arg(long)]
    pub url: String,
    /// The app secret that signs the `sign` header.
    #[arg(long)]
    pub secret: String,
    /// robotCode (the AppKey, for an internal app's robot).
    #[arg(long, default_value = "dingsimapp")]
    pub robot_code: String,
    /// The message text.
    #[arg(long, default_value = "hello")]
    pub text: String,
    /// Post it as written in this group (openConversationId), @-mentioning the robot.
    #[arg(long)]
    pub group: Option<String>,
    /// The group's title.
    #[arg(long, default_value = "ops")]
    pub group_title: String,
    /// Sender userId (a seeded user by default).
    #[arg(long, default_value = "user001")]
    pub sender: String,
    /// The simulator serving the sessionWebhook.
    #[arg(long, default_value = "http://127.0.0.1:9300")]
    pub sim_url: String,
    /// Use this msgId (to replay a message).
    #[arg(long)]
    pub msg_id: Option<String>,
    /// Then wait for the bot's answer in the simulator at --sim-url and print it as it changes.
    #[arg(long)]
    pub wait_reply: bool,
    /// How long --wait-reply waits for an answer.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub reply_timeout: Duration,
}

/// Options of event sends.
#[derive(Debug, Args)]
pub struct EventArgs {
    /// The receiver's event subscription URL.
    #[arg(long)]
    pub url: String,
    /// The subscription Token.
    #[arg(long)]
    pub token: String,
    /// The 43-character AES key.
    #[arg(long)]
    pub aes_key: String,
    /// The AppKey (the receiveId).
    #[arg(long)]
    pub app_key: String,
    /// The event JSON (default: {"EventType":"check_url"}).
    #[arg(long)]
    pub event: Option<String>,
}

/// Options of card action sends.
#[derive(Debug, Args)]
pub struct CardActionArgs {
    /// The receiver's card callback URL.
    #[arg(long)]
    pub url: String,
    /// The card's outTrackId.
    #[arg(long)]
    pub out_track_id: String,
    /// Who pressed.
    #[arg(long, default_value = "user001")]
    pub user: String,
    /// The button's action id.
    #[arg(long, default_value = "confirm")]
    pub action: String,
    /// The group the card is in.
    #[arg(long, default_value = Directory::OPS_GROUP)]
    pub space_id: String,
}

/// Options of a load run.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The receiver's URL.
    #[arg(long)]
    pub url: String,
    /// New callbacks per second.
    #[arg(long, default_value_t = 50)]
    pub rate: u32,
    /// How long to generate, e.g. 10s or 2m.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Attempts per callback, the first included.
    #[arg(long, default_value_t = 4)]
    pub max_attempts: u32,
    /// Wait before the first redelivery (doubles each time, at most 60s).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub first_backoff: Duration,
    /// Callbacks in flight at once.
    #[arg(long, default_value_t = 512)]
    pub max_in_flight: usize,
    /// App secret signing robot messages (robot message load).
    #[arg(long, required_unless_present = "token")]
    pub secret: Option<String>,
    /// robotCode of the messages.
    #[arg(long, default_value = "dingsimapp")]
    pub robot_code: String,
    /// Send as written in this group.
    #[arg(long)]
    pub group: Option<String>,
    /// The simulator serving the sessionWebhook.
    #[arg(long, default_value = "http://127.0.0.1:9300")]
    pub sim_url: String,
    /// Event load instead: the subscription Token (with --aes-key and --app-key).
    #[arg(long, requires_all = ["aes_key", "app_key"])]
    pub token: Option<String>,
    /// Event load: the AES key.
    #[arg(long)]
    pub aes_key: Option<String>,
    /// Event load: the AppKey.
    #[arg(long)]
    pub app_key: Option<String>,
}

impl Cli {
    /// Runs the chosen subcommand; the exit code says whether it worked.
    pub async fn run(self) -> ExitCode {
        let result = match self.command.unwrap_or(Command::Serve) {
            Command::Serve => return serve().await,
            Command::SendRobotMessage(args) => send_robot_message(args).await,
            Command::SendEvent(args) => send_event(args).await,
            Command::SendCardAction(args) => send_card_action(args).await,
            Command::Load(args) => load(args).await,
        };
        match result {
            Ok(output) => {
                if !output.is_empty() {
                    println!("{output}");
                }
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("dingtalk-sim: {err}");
                ExitCode::FAILURE
            }
        }
    }
}

/// Runs the simulator until SIGTERM or Ctrl-C.
async fn serve() -> ExitCode {
    let env = Env::from_process();
    common::telemetry::init_tracing(LogFormat::Pretty, &env.string("RUST_LOG", "info"));
    let config = match SimConfig::from_env(&env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("dingtalk-sim: {err}");
            return ExitCode::from(2);
        }
    };
    let stop = Shutdown::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown::signal().await;
        on_signal.trigger();
    });
    match Simulator::start_with_shutdown(config, stop).await {
        Ok(running) => {
            println!("dingtalk-sim listening on {}", running.base_url());
            running.wait().await;
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("dingtalk-sim: {err}");
            ExitCode::FAILURE
        }
    }
}

fn client() -> Result<CallbackClient, String> {
    CallbackClient::new(REQUEST_TIMEOUT).map_err(|err| err.to_string())
}

fn pretty(value: &impl Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|err| format!("(unprintable: {err})"))
}

async fn send_robot_message(args: RobotMessageArgs) -> Result<String, String> {
    let directory = Directory::seeded();
    let nick = directory
        .user(&args.sender)
        .map(|user| user.name.clone())
        .unwrap_or_else(|| args.sender.clone());
    let mut message = RobotMessage::text(&args.robot_code, &args.text, &args.sim_url)
        .from_user(&args.sender, nick);
    if let Some(group) = &args.group {
        message = message.in_group(group, &args.group_title);
    }
    if let Some(msg_id) = args.msg_id {
        message.msg_id = msg_id;
    }
    let sent_at_ms = crate::ids::now_ms();
    let answer = client()?
        .send_robot_message(&args.url, &args.secret, &message)
        .await
        .map_err(|err| err.to_string())?;
    let sent = pretty(&serde_json::json!({ "msgId": message.msg_id, "answer": answer }));
    if !args.wait_reply {
        return Ok(sent);
    }
    println!("{sent}");
    if !answer.is_ack() {
        return Err(format!(
            "the callback was answered {}, so DingTalk would redeliver it; no reply to wait for",
            answer.status
        ));
    }
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|err| err.to_string())?;
    let reply = await_reply(
        &http,
        &args.sim_url,
        &message,
        sent_at_ms,
        args.reply_timeout,
        REPLY_SETTLE,
        |_| false,
        |text| println!("bot: {text}"),
    )
    .await
    .map_err(|err| err.to_string())?;
    match reply {
        Some(_) => Ok(String::new()),
        None => Err(format!(
            "no reply within {}; see the services' logs",
            humantime::format_duration(args.reply_timeout)
        )),
    }
}

async fn send_event(args: EventArgs) -> Result<String, String> {
    let signer = EventSigner::new(&args.token, &args.aes_key, &args.app_key)
        .map_err(|err| err.to_string())?;
    let event: Value = match &args.event {
        Some(text) => {
            serde_json::from_str(text).map_err(|err| format!("--event is not JSON: {err}"))?
        }
        None => check_url(),
    };
    let answer = client()?
        .send_event(&args.url, &signer, &event)
        .await
        .map_err(|err| err.to_string())?;
    Ok(pretty(&answer))
}

async fn send_card_action(args: CardActionArgs) -> Result<String, String> {
    let action = CardAction::in_group(args.out_track_id, args.space_id, args.user, args.action);
    let answer = client()?
        .send_card_action(&args.url, &action)
        .await
        .map_err(|err| err.to_string())?;
    Ok(pretty(&answer))
}

async fn load(args: LoadArgs) -> Result<String, String> {
    let target = match (&args.token, &args.aes_key, &args.app_key, &args.secret) {
        (Some(token), Some(aes_key), Some(app_key), _) => LoadTarget::Events {
            url: args.url.clone(),
            signer: EventSigner::new(token, aes_key, app_key).map_err(|err| err.to_string())?,
        },
        (_, _, _, Some(secret)) => {
            let mut template = RobotMessage::text(&args.robot_code, "", &args.sim_url);
            if let Some(group) = &args.group {
                template = template.in_group(group, "load");
            }
            LoadTarget::RobotMessages {
                url: args.url.clone(),
                app_secret: Secret::new(secret.clone()),
                template,
            }
        }
        _ => {
            return Err(
                "give --secret (robot messages) or --token, --aes-key and --app-key (events)"
                    .to_owned(),
            )
        }
    };
    let plan = LoadPlan {
        rate_per_s: args.rate,
        duration: args.duration,
        max_attempts: args.max_attempts,
        first_backoff: args.first_backoff,
        max_in_flight: args.max_in_flight,
        ..LoadPlan::default()
    };
    let report = run_load(&client()?, target, plan)
        .await
        .map_err(|err| err.to_string())?;
    Ok(pretty(&report))
}
