//! The simulator acting as DingTalk towards a callback receiver (the ingress): robot message
//! callbacks, encrypted event callbacks and card action callbacks, one at a time
//! ([`CallbackClient`]) or as a bounded load with redelivery ([`run_load`]); and reading the bot's
//! answer back from the simulator's record ([`await_reply`]).

mod card_action;
mod event;
mod load;
mod reply;
mod robot_message;
mod sender;
mod stats;

pub use card_action::CardAction;
pub use event::{check_url, user_modified, EventSigner, SealedEvent};
pub use load::{run_load, LoadError, LoadPlan, LoadReport, LoadTarget};
pub use reply::{await_reply, current_reply, ReplyError};
pub use robot_message::{Chat, Content, RobotMessage, SESSION_LIFETIME};
pub use sender::{Answer, CallbackClient, ClientError, EventAnswer};
pub use stats::LatencySummary;
