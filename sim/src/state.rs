//! The simulator's whole state behind one lock, and [`SimState`], the cheap handle tests and
//! handlers share.
//!
//! The lock is a plain `std::sync::Mutex`: every critical section is short, synchronous work on
//! in-memory maps, and it is never held across an `.await` (slow answers sleep outside it).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use serde::Serialize;

use crate::api::Api;
use crate::cards::{CardInstance, CardStore, StandardCard};
use crate::config::{AppCredentials, CustomRobotConfig, Limits, SimConfig};
use crate::directory::{Directory, Group};
use crate::faults::{Fault, FaultBook, FaultCount, FaultError, FaultKind};
use crate::ids;
use crate::limits::{MinuteLimiter, QpsWindow};
use crate::media::{MediaFile, MediaStore};
use crate::messages::{MessageStore, SentMessage};
use crate::record::{CallFilter, CallLog, RecordedCall};
use crate::stream::{
    ConnectionControl, Gateway, OpenAttempt, StreamAck, StreamConnection, StreamError, StreamPush,
};
use crate::tokens::TokenStore;

/// A registered custom robot with its rate limiter.
#[derive(Debug)]
pub(crate) struct CustomRobot {
    pub config: CustomRobotConfig,
    pub limiter: MinuteLimiter,
}

/// Everything mutable, guarded by [`SimState`]'s lock.
#[derive(Debug)]
pub(crate) struct Inner {
    pub limits: Limits,
    pub base_url: String,
    pub apps: HashMap<String, AppCredentials>,
    pub new_tokens: TokenStore,
    pub old_tokens: TokenStore,
    pub qps: HashMap<(String, Api), QpsWindow>,
    pub faults: FaultBook,
    pub calls: CallLog,
    pub directory: Directory,
    pub messages: MessageStore,
    pub cards: CardStore,
    pub media: MediaStore,
    pub custom_robots: HashMap<String, CustomRobot>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistrationError {
    /// The registry of this kind is full.
    #[error("at most {0} may be registered")]
    Full(usize),
    /// A fault rule was refused.
    #[error(transparent)]
    Fault(#[from] FaultError),
}

impl Inner {
    fn new(config: &SimConfig) -> Self {
        let limits = config.limits.clone();
        let token_cap = limits.max_registrations.saturating_mul(4).max(16);
        let mut inner = Self {
            base_url: String::new(),
            apps: HashMap::new(),
            new_tokens: TokenStore::new(ids::new_api_token, token_cap),
            old_tokens: TokenStore::new(ids::old_api_token, token_cap),
            qps: HashMap::new(),
            faults: FaultBook::new(limits.max_registrations),
            calls: CallLog::new(limits.max_recorded_calls),
            directory: config.directory.clone(),
            messages: MessageStore::new(limits.max_stored_items),
            cards: CardStore::new(limits.max_stored_items, limits.max_registrations),
            media: MediaStore::new(limits.max_media_total_bytes),
            custom_robots: HashMap::new(),
            limits,
        };
        for app in &config.apps {
            // The configured lists are the operator's; the cap only guards runtime registration.
            inner.apps.insert(app.app_key.clone(), app.clone());
        }
        for robot in &config.custom_robots {
            inner.custom_robots.insert(
                robot.access_token.clone(),
                CustomRobot {
                    config: robot.clone(),
                    limiter: MinuteLimiter::default(),
                },
            );
        }
        inner
    }

    /// Records a call (accepted when `reason` is `None`).
    pub fn record(
        &mut self,
        api: Api,
        app: Option<String>,
        body: serde_json::Value,
        status: u16,
        reason: Option<String>,
    ) {
        self.calls
            .record(ids::now_ms(), api, app, body, status, reason);
    }

    /// The registered app with this AppKey.
    pub fn app(&self, app_key: &str) -> Option<&AppCredentials> {
        self.apps.get(app_key)
    }

    fn expire_tokens(&mut self, app: Option<&str>) -> usize {
        let now = ids::now_ms();
        self.new_tokens.expire(app, now) + self.old_tokens.expire(app, now)
    }
}

/// A cheap, cloneable handle on a running simulator's state, for in-process assertions and
/// set-up (the control API does the same over HTTP).
#[derive(Debug, Clone)]
pub struct SimState {
    inner: Arc<Mutex<Inner>>,
    stream: Arc<Gateway>,
}

/// What `POST /_sim/faults` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FaultAdded {
    /// A rule was added with this id.
    Rule {
        /// The rule's id.
        id: u64,
    },
    /// Tokens were expired at once.
    Expired {
        /// How many live tokens were expired.
        expired: usize,
    },
}

/// An active fault rule, as listed by `GET /_sim/faults`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveFault {
    /// The rule's id.
    pub id: u64,
    /// The rule.
    #[serde(flatten)]
    pub fault: Fault,
    /// Matching calls it will still affect.
    pub remaining: FaultCount,
}

impl SimState {
    /// State for `config` (the base URL is set once the listener is bound).
    pub(crate) fn new(config: &SimConfig) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner::new(config))),
            stream: Arc::new(Gateway::new(config.stream.clone())),
        }
    }

    /// Locks the state. A handler that panicked cannot leave the maps inconsistent in a way
    /// that matters to a simulator, so a poisoned lock is simply taken over.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Stream gateway.
    pub(crate) fn stream(&self) -> &Arc<Gateway> {
        &self.stream
    }

    /// Pushes a frame to the app's Stream connections (or queues it until one connects);
    /// returns the push's id, which [`StreamAck::origin`] of its settling answer carries.
    pub fn stream_push(&self, push: StreamPush) -> Result<String, StreamError> {
        if self.lock().app(push_app(&push)).is_none() {
            return Err(StreamError::UnknownApp(push_app(&push).to_owned()));
        }
        self.stream.push(push)
    }

    /// The open Stream connections, oldest first.
    pub fn stream_connections(&self) -> Vec<StreamConnection> {
        self.stream.connections()
    }

    /// Disconnects, drops or silences one Stream connection; `false` if it is not open.
    pub fn stream_control(&self, connection_id: &str, control: ConnectionControl) -> bool {
        self.stream.control(connection_id, control)
    }

    /// Every answer received on Stream connections, oldest first.
    pub fn stream_acks(&self) -> Vec<StreamAck> {
        self.stream.acks()
    }

    /// Every call of the Stream open endpoint, oldest first.
    pub fn stream_opens(&self) -> Vec<OpenAttempt> {
        self.stream.opens()
    }

    /// Frames pushed and not yet settled by an ack.
    pub fn stream_pending(&self) -> usize {
        self.stream.pending()
    }

    pub(crate) fn set_base_url(&self, base_url: String) {
        self.lock().base_url = base_url;
    }

    /// Registers (or replaces) an app.
    pub fn register_app(&self, app: AppCredentials) -> Result<(), RegistrationError> {
        let mut inner = self.lock();
        let cap = inner.limits.max_registrations;
        if inner.apps.len() >= cap && !inner.apps.contains_key(&app.app_key) {
            return Err(RegistrationError::Full(cap));
        }
        inner.apps.insert(app.app_key.clone(), app);
        Ok(())
    }

    /// AppKeys of the registered apps, sorted.
    pub fn app_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().apps.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Registers (or replaces) a custom robot; its rate limit starts afresh.
    pub fn register_custom_robot(&self, robot: CustomRobotConfig) -> Result<(), RegistrationError> {
        let mut inner = self.lock();
        let cap = inner.limits.max_registrations;
        if inner.custom_robots.len() >= cap
            && !inner.custom_robots.contains_key(&robot.access_token)
        {
            return Err(RegistrationError::Full(cap));
        }
        inner.custom_robots.insert(
            robot.access_token.clone(),
            CustomRobot {
                config: robot,
                limiter: MinuteLimiter::default(),
            },
        );
        Ok(())
    }

    /// Adds (or replaces) a group.
    pub fn upsert_group(&self, group: Group) -> Result<(), RegistrationError> {
        let mut inner = self.lock();
        let cap = inner.limits.max_registrations;
        let known = inner.directory.group(&group.open_conversation_id).is_some();
        if inner.directory.groups.len() >= cap && !known {
            return Err(RegistrationError::Full(cap));
        }
        inner.directory.upsert_group(group);
        Ok(())
    }

    /// Replaces the whole org.
    pub fn set_directory(&self, directory: Directory) {
        self.lock().directory = directory;
    }

    /// The current org.
    pub fn directory(&self) -> Directory {
        self.lock().directory.clone()
    }

    /// Adds a fault rule, or performs `expire_tokens` at once.
    pub fn add_fault(&self, fault: Fault) -> Result<FaultAdded, RegistrationError> {
        let mut inner = self.lock();
        if fault.kind == FaultKind::ExpireTokens {
            let expired = inner.expire_tokens(fault.app.as_deref());
            return Ok(FaultAdded::Expired { expired });
        }
        let id = inner.faults.add(fault)?;
        Ok(FaultAdded::Rule { id })
    }

    /// The active fault rules.
    pub fn faults(&self) -> Vec<ActiveFault> {
        self.lock()
            .faults
            .list()
            .into_iter()
            .map(|(id, fault, remaining)| ActiveFault {
                id,
                fault,
                remaining,
            })
            .collect()
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// Expires the live tokens of both kinds (of one app, or all); returns how many.
    pub fn expire_tokens(&self, app: Option<&str>) -> usize {
        self.lock().expire_tokens(app)
    }

    /// Accepted calls matching `filter`, oldest first.
    pub fn calls(&self, filter: &CallFilter) -> Vec<RecordedCall> {
        self.lock().calls.accepted(filter)
    }

    /// Refused calls matching `filter`, oldest first, each with its reason.
    pub fn rejected(&self, filter: &CallFilter) -> Vec<RecordedCall> {
        self.lock().calls.rejected(filter)
    }

    /// How many accepted and refused calls were dropped to respect the cap.
    pub fn dropped_calls(&self) -> (u64, u64) {
        self.lock().calls.dropped()
    }

    /// Removes and returns every accepted call recorded so far, oldest first, in one step (no
    /// call is lost between reading and forgetting).
    pub fn take_calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.take_accepted()
    }

    /// Forgets every recorded call.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Every delivered robot message (app robots, custom robots, session replies), oldest first.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.lock().messages.list()
    }

    /// Every StandardCard, oldest first.
    pub fn standard_cards(&self) -> Vec<StandardCard> {
        self.lock().cards.standard.values().cloned().collect()
    }

    /// Every card instance, oldest first.
    pub fn card_instances(&self) -> Vec<CardInstance> {
        self.lock().cards.instances.values().cloned().collect()
    }

    /// The card instance `out_track_id` of `app`.
    pub fn card_instance(&self, app: &str, out_track_id: &str) -> Option<CardInstance> {
        self.lock()
            .cards
            .instances
            .get(&crate::cards::scoped(app, out_track_id))
            .cloned()
    }

    /// Stores a file as if a user had sent it to a robot; returns the `downloadCode` to put
    /// into a robot callback (`POST /v1.0/robot/messageFiles/download` resolves it).
    pub fn add_download(&self, file_name: &str, bytes: Bytes) -> String {
        let media_id = ids::media_id();
        let code = ids::download_code();
        let mut inner = self.lock();
        inner.media.put(MediaFile {
            media_id: media_id.clone(),
            media_type: "file".to_owned(),
            file_name: file_name.to_owned(),
            size: bytes.len(),
            bytes,
        });
        inner.media.add_download_code(code.clone(), media_id);
        code
    }

    /// An uploaded or added file by media id.
    pub fn media(&self, media_id: &str) -> Option<MediaFile> {
        self.lock().media.get(media_id).cloned()
    }
}

fn push_app(push: &StreamPush) -> &str {
    match push {
        StreamPush::RobotMessage { app_key, .. }
        | StreamPush::CardCallback { app_key, .. }
        | StreamPush::Event { app_key, .. } => app_key,
    }
}
