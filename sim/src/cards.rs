//! Cards the simulator holds: robot StandardCards (by `cardBizId`), card instances (by
//! `outTrackId`) with their deliveries and streamed contents, and the HTTP card-callback
//! routes apps registered. All are per app, as at DingTalk.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::bounded::BoundedMap;

/// A robot interactive card of the "StandardCard" kind (PROTOCOL §4.5).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StandardCard {
    /// The app that sent it.
    pub app: String,
    /// The caller's id for it.
    pub card_biz_id: String,
    /// `cardTemplateId`.
    pub card_template_id: String,
    /// Group id or 1:1 user id.
    pub target: String,
    /// The latest `cardData`, decoded.
    pub card_data: Value,
    /// How many updates it received.
    pub updates: u32,
    /// The send's processQueryKey.
    pub process_query_key: String,
}

/// A streamed variable of an AI card (PROTOCOL §4.7).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamedValue {
    /// The text so far.
    pub content: String,
    /// `isFinalize` was seen.
    pub finalized: bool,
    /// `isError` was seen.
    pub error: bool,
    /// Streaming calls received.
    pub updates: u32,
}

/// A space a card instance was delivered to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `IM_GROUP` or `IM_ROBOT`.
    pub space_type: String,
    /// The group id or user id.
    pub space_id: String,
}

/// A card instance (PROTOCOL §4.6).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CardInstance {
    /// The owning app.
    pub app: String,
    /// The caller's id for it.
    pub out_track_id: String,
    /// `cardTemplateId`.
    pub card_template_id: String,
    /// The current `cardParamMap` (string values only).
    pub card_param_map: Map<String, Value>,
    /// `STREAM` or `HTTP`, when given.
    pub callback_type: Option<String>,
    /// The callback route, when given.
    pub callback_route_key: Option<String>,
    /// Where it was delivered.
    pub deliveries: Vec<Delivery>,
    /// Streamed variables by key.
    pub streams: BTreeMap<String, StreamedValue>,
    /// Update calls received.
    pub updates: u32,
}

/// An HTTP card-callback registration (PROTOCOL §4.6b).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackRoute {
    /// The owning app.
    pub app: String,
    /// `callbackRouteKey`.
    pub callback_route_key: String,
    /// `callbackUrl`.
    pub callback_url: String,
    /// `apiSecret`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_secret: Option<String>,
}

/// Key of a per-app item: (AppKey, id).
pub type AppScoped = (String, String);

/// All card state, each map bounded.
#[derive(Debug)]
pub struct CardStore {
    /// StandardCards by (app, cardBizId).
    pub standard: BoundedMap<AppScoped, StandardCard>,
    /// Card instances by (app, outTrackId).
    pub instances: BoundedMap<AppScoped, CardInstance>,
    /// Callback routes by (app, callbackRouteKey).
    pub routes: BoundedMap<AppScoped, CallbackRoute>,
}

impl CardStore {
    /// Stores of `cap` cards each and `route_cap` routes.
    pub fn new(cap: usize, route_cap: usize) -> Self {
        Self {
            standard: BoundedMap::new(cap),
            instances: BoundedMap::new(cap),
            routes: BoundedMap::new(route_cap),
        }
    }
}

/// The key of a per-app item.
pub fn scoped(app: &str, id: &str) -> AppScoped {
    (app.to_owned(), id.to_owned())
}
