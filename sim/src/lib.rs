//! A DingTalk simulator over real HTTP, for the gateway's tests, benchmarks and local runs.
//!
//! **As DingTalk's API** ([`Simulator::start`]): one listener serves the api.dingtalk.com
//! (`/v1.0/…`) and oapi.dingtalk.com paths the gateway calls — tokens, robot messages, cards,
//! media, contacts, custom robots and session webhooks — validating requests the way DingTalk
//! does and answering in its error shapes (PROTOCOL §6.1). Per-(app, API) QPS limits and the
//! custom robot's per-minute limit are enforced; failures can be injected ([`Fault`]); every call
//! is recorded for assertions ([`SimState::calls`], `GET /_sim/calls`).
//!
//! **As DingTalk towards the ingress** ([`client`]): signed robot messages, encrypted event
//! callbacks and card action callbacks, one at a time or as a bounded load with DingTalk-style
//! redelivery of non-200 answers.
//!
//! Memory is bounded everywhere: recorded calls, messages, cards and media keep the newest
//! entries up to the caps in [`Limits`].

#![warn(missing_docs)]

mod api;
mod body;
mod bounded;
mod cards;
mod classic;
mod config;
mod directory;
mod error;
mod faults;
mod gate;
mod ids;
mod limits;
mod media;
mod messages;
mod open_space;
mod record;
mod routes;
mod server;
mod session;
mod state;
mod stream;
mod templates;
mod tokens;

pub mod cli;
pub mod client;

pub use api::{Api, Family};
pub use cards::{CallbackRoute, CardInstance, Delivery, StandardCard, StreamedValue};
pub use config::{AppCredentials, CustomRobotConfig, Limits, SimConfig};
pub use directory::{Department, Directory, ExternalContact, Group, GroupRobots, User};
pub use error::ApiError;
pub use faults::{Fault, FaultCount, FaultKind};
pub use gate::TOKEN_HEADER;
pub use media::MediaFile;
pub use messages::{Recipient, SentMessage};
pub use record::{CallFilter, RecordedCall};
pub use server::{RunningSim, Simulator, StartError};
pub use session::Session;
pub use state::{ActiveFault, FaultAdded, RegistrationError, SimState};
pub use stream::{
    ConnectionControl, OpenAttempt, StreamAck, StreamConnection, StreamError, StreamPush,
    StreamSettings, CARD_TOPIC, ROBOT_TOPIC,
};
