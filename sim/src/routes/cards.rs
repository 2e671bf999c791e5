//! Card instances (PROTOCOL §4.6, §4.7, §4.6b): create, deliver, create-and-deliver, update,
//! streaming update, and registration of HTTP card callbacks.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{post, put};
use axum::Router;
use serde_json::{json, Map, Value};

use crate::api::Api;
use crate::body::Fields;
use crate::cards::{scoped, CallbackRoute, CardInstance, Delivery};
use crate::error::ApiError;
use crate::gate::{serve_call, Auth, CallCtx};
use crate::open_space::OpenSpace;
use crate::state::{Inner, SimState};
use crate::templates::json_type;

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route(Api::CardCreate.path(), post(create).put(update))
        .route(Api::CardDeliver.path(), post(deliver))
        .route(Api::CardCreateAndDeliver.path(), post(create_and_deliver))
        .route(Api::CardStreaming.path(), put(streaming))
        .route(Api::CardCallbackRegister.path(), post(register_callback))
}

/// Runs a JSON-body card endpoint through the gate.
async fn card_call(
    state: SimState,
    api: Api,
    headers: HeaderMap,
    body: Bytes,
    logic: fn(&mut Inner, &CallCtx, Fields) -> Result<Value, ApiError>,
) -> Response {
    let parsed = Fields::from_body(&body);
    let record = super::recordable(&parsed, &body);
    serve_call(
        &state,
        api,
        Auth::new_token(&headers),
        record,
        |inner, ctx| logic(inner, ctx, parsed?),
    )
    .await
}

async fn create(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    card_call(
        state,
        Api::CardCreate,
        headers,
        body,
        |inner, ctx, fields| {
            let instance = new_instance(inner, ctx, &fields)?;
            let out_track_id = instance.out_track_id.clone();
            store(inner, instance);
            Ok(json!({ "success": true, "result": out_track_id }))
        },
    )
    .await
}

async fn deliver(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    card_call(
        state,
        Api::CardDeliver,
        headers,
        body,
        |inner, ctx, fields| {
            let app = ctx.app_key()?.to_owned();
            let out_track_id = fields.str("outTrackId")?;
            let spaces = plan_delivery(inner, ctx, &fields)?;
            let mut instance = inner
                .cards
                .instances
                .get(&scoped(&app, out_track_id))
                .cloned()
                .ok_or_else(|| ApiError::NotFound {
                    what: "outTrackId",
                    id: out_track_id.to_owned(),
                })?;
            let results = deliver_to(inner, &spaces, &mut instance);
            store(inner, instance);
            Ok(json!({ "success": true, "result": results }))
        },
    )
    .await
}

async fn create_and_deliver(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    card_call(
        state,
        Api::CardCreateAndDeliver,
        headers,
        body,
        |inner, ctx, fields| {
            let mut instance = new_instance(inner, ctx, &fields)?;
            let spaces = plan_delivery(inner, ctx, &fields)?;
            let results = deliver_to(inner, &spaces, &mut instance);
            let out_track_id = instance.out_track_id.clone();
            store(inner, instance);
            Ok(json!({
                "success": true,
                "result": { "outTrackId": out_track_id, "deliverResults": results },
            }))
        },
    )
    .await
}

async fn update(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    card_call(
        state,
        Api::CardUpdate,
        headers,
        body,
        |inner, ctx, fields| {
            let app = ctx.app_key()?.to_owned();
            let out_track_id = fields.str("outTrackId")?;
            let params = card_param_map(&fields)?;
            let by_key = match fields.opt_object("cardUpdateOptions")? {
                Some(options) => options.opt_bool("updateCardDataByKey")?.unwrap_or(false),
                None => false,
            };
            let instance = existing(inner, &app, out_track_id)?;
            if by_key {
                instance.card_param_map.extend(params);
            } else {
                instance.card_param_map = params;
            }
            instance.updates += 1;
            Ok(json!({ "success": true, "result": true }))
        },
    )
    .await
}

async fn streaming(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    card_call(
        state,
        Api::CardStreaming,
        headers,
        body,
        |inner, ctx, fields| {
            let app = ctx.app_key()?.to_owned();
            let out_track_id = fields.str("outTrackId")?;
            fields.str("guid")?;
            let key = fields.str("key")?.to_owned();
            let content = match fields.get("content") {
                None => return Err(ApiError::missing("content")),
                Some(Value::String(text)) => text.clone(),
                Some(other) => {
                    return Err(ApiError::invalid(
                        "content",
                        format!("must be a string, not a JSON {}", json_type(other)),
                    ))
                }
            };
            let is_full = fields.opt_bool("isFull")?.unwrap_or(false);
            let finalize = fields.opt_bool("isFinalize")?.unwrap_or(false);
            let error = fields.opt_bool("isError")?.unwrap_or(false);
            let instance = existing(inner, &app, out_track_id)?;
            let stream = instance.streams.entry(key).or_default();
            if is_full {
                stream.content = content;
            } else {
                stream.content.push_str(&content);
            }
            stream.finalized |= finalize;
            stream.error |= error;
            stream.updates += 1;
            Ok(json!({ "success": true, "result": true }))
        },
    )
    .await
}

async fn register_callback(
    State(state): State<SimState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    card_call(state, Api::CardCallbackRegister, headers, body, |inner, ctx, fields| {
        let app = ctx.app_key()?.to_owned();
        let route_key = fields.str("callbackRouteKey")?.to_owned();
        let url = fields.str("callbackUrl")?.to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ApiError::invalid(
                "callbackUrl",
                "must be an http:// or https:// URL",
            ));
        }
        let api_secret = fields.opt_str("apiSecret")?.map(str::to_owned);
        let force = fields.opt_bool("forceUpdate")?.unwrap_or(false);
        let key = scoped(&app, &route_key);
        if let Some(known) = inner.cards.routes.get(&key) {
            if known.callback_url != url && !force {
                return Err(ApiError::invalid(
                    "forceUpdate",
                    format!("callbackRouteKey {route_key:?} is registered to another URL; pass forceUpdate=true to replace it"),
                ));
            }
        }
        inner.cards.routes.insert(
            key,
            CallbackRoute {
                app,
                callback_route_key: route_key.clone(),
                callback_url: url.clone(),
                api_secret,
            },
        );
        Ok(json!({
            "success": true,
            "result": { "callbackRouteKey": route_key, "callbackUrl": url },
        }))
    })
    .await
}

/// Validates a create request into an instance (not yet stored).
fn new_instance(inner: &Inner, ctx: &CallCtx, fields: &Fields) -> Result<CardInstance, ApiError> {
    let app = ctx.app_key()?.to_owned();
    let template_id = fields.str("cardTemplateId")?.to_owned();
    let out_track_id = fields.str("outTrackId")?.to_owned();
    let params = card_param_map(fields)?;
    let callback_type = fields.opt_str("callbackType")?.map(str::to_owned);
    let route_key = fields.opt_str("callbackRouteKey")?.map(str::to_owned);
    match callback_type.as_deref() {
        None | Some("STREAM") => {}
        Some("HTTP") => {
            let route_key = route_key
                .as_deref()
                .ok_or_else(|| ApiError::missing("callbackRouteKey"))?;
            if !inner.cards.routes.contains(&scoped(&app, route_key)) {
                return Err(ApiError::invalid(
                    "callbackRouteKey",
                    format!(
                        "{route_key:?} is not registered; POST /v1.0/card/callbacks/register first"
                    ),
                ));
            }
        }
        Some(other) => {
            return Err(ApiError::invalid(
                "callbackType",
                format!("{other:?} is not allowed; allowed: STREAM, HTTP"),
            ))
        }
    }
    fields.opt_object("imGroupOpenSpaceModel")?;
    fields.opt_object("imRobotOpenSpaceModel")?;
    if inner.cards.instances.contains(&scoped(&app, &out_track_id)) {
        return Err(ApiError::invalid(
            "outTrackId",
            format!("{out_track_id:?} already exists; update it with PUT /v1.0/card/instances"),
        ));
    }
    Ok(CardInstance {
        app,
        out_track_id,
        card_template_id: template_id,
        card_param_map: params,
        callback_type,
        callback_route_key: route_key,
        deliveries: Vec::new(),
        streams: Default::default(),
        updates: 0,
    })
}

/// `cardData.cardParamMap`: required, and every value a string (nested data goes JSON-encoded).
fn card_param_map(fields: &Fields) -> Result<Map<String, Value>, ApiError> {
    let card_data = fields.object("cardData")?;
    let map = card_data
        .object("cardParamMap")
        .map_err(|_| ApiError::missing("cardData.cardParamMap"))?;
    for (key, value) in &map.0 {
        if !value.is_string() {
            return Err(ApiError::invalid(
                "cardData.cardParamMap",
                format!(
                    "value of {key:?} must be a string (JSON-encode nested data), not a JSON {}",
                    json_type(value)
                ),
            ));
        }
    }
    Ok(map.0)
}

/// Validates the delivery part of a request: `openSpaceId`, `userIdType` and the deliver
/// model each space type needs, with the robot being the caller's.
fn plan_delivery(
    inner: &Inner,
    ctx: &CallCtx,
    fields: &Fields,
) -> Result<Vec<OpenSpace>, ApiError> {
    let spaces = OpenSpace::parse_list(fields.str("openSpaceId")?)?;
    match fields.opt_int("userIdType")? {
        None | Some(1) => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "userIdType",
                format!("{other} is not supported; allowed: 1 (userId)"),
            ))
        }
    }
    for space in &spaces {
        let (model_field, robot_required) = match space {
            OpenSpace::ImGroup(_) => ("imGroupOpenDeliverModel", true),
            OpenSpace::ImRobot(_) => ("imRobotOpenDeliverModel", false),
        };
        let model = fields.object(model_field)?;
        let robot = if robot_required {
            Some(model.str("robotCode")?)
        } else {
            model.opt_str("robotCode")?
        };
        if let Some(robot) = robot {
            super::check_robot(inner, ctx, robot)?;
        }
    }
    Ok(spaces)
}

/// Delivers to each space, reporting per space as DingTalk does (a space that cannot receive
/// the card fails alone).
fn deliver_to(inner: &Inner, spaces: &[OpenSpace], instance: &mut CardInstance) -> Vec<Value> {
    let robot_code = inner
        .app(&instance.app)
        .map(|app| app.robot_code().to_owned())
        .unwrap_or_default();
    spaces
        .iter()
        .map(|space| {
            let failure = match space {
                OpenSpace::ImGroup(group) => {
                    super::robot::robot_in_group(inner, &robot_code, group).err()
                }
                OpenSpace::ImRobot(user) => {
                    inner
                        .directory
                        .user(user)
                        .is_none()
                        .then(|| ApiError::NotFound {
                            what: "user",
                            id: user.clone(),
                        })
                }
            };
            if failure.is_none() {
                instance.deliveries.push(Delivery {
                    space_type: space.space_type().to_owned(),
                    space_id: space.space_id().to_owned(),
                });
            }
            let mut result = json!({
                "spaceType": space.space_type(),
                "spaceId": space.space_id(),
                "success": failure.is_none(),
            });
            if let Some(failure) = failure {
                result["errorMsg"] = Value::from(failure.to_string());
            }
            result
        })
        .collect()
}

/// The stored instance `out_track_id` of `app`.
fn existing<'a>(
    inner: &'a mut Inner,
    app: &str,
    out_track_id: &str,
) -> Result<&'a mut CardInstance, ApiError> {
    inner
        .cards
        .instances
        .get_mut(&scoped(app, out_track_id))
        .ok_or_else(|| ApiError::NotFound {
            what: "outTrackId",
            id: out_track_id.to_owned(),
        })
}

/// Stores (or replaces) an instance.
fn store(inner: &mut Inner, instance: CardInstance) {
    let key = scoped(&instance.app, &instance.out_track_id);
    inner.cards.instances.insert(key, instance);
}
