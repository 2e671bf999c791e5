//! Robot interactive cards of the "StandardCard" kind (PROTOCOL §4.5): send by `cardBizId` to a
//! group or one user, then update by the same `cardBizId`. A sent card is also a robot message
//! in its chat, under the `processQueryKey` the send answered, so it can be recalled (1:1 or
//! group recall) like any other.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{post, put};
use axum::Router;
use serde_json::{json, Value};

use crate::api::Api;
use crate::body::Fields;
use crate::cards::{scoped, StandardCard};
use crate::error::ApiError;
use crate::gate::{serve_call, Auth, CallCtx};
use crate::ids;
use crate::messages::{Recipient, SentMessage};
use crate::state::{Inner, SimState};

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route(Api::StandardCardSend.path(), post(send))
        .route(Api::StandardCardUpdate.path(), put(update))
}

async fn send(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = Fields::from_body(&body);
    let record = super::recordable(&parsed, &body);
    serve_call(
        &state,
        Api::StandardCardSend,
        Auth::new_token(&headers),
        record,
        |inner, ctx| send_card(inner, ctx, parsed?),
    )
    .await
}

async fn update(State(state): State<SimState>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = Fields::from_body(&body);
    let record = super::recordable(&parsed, &body);
    serve_call(
        &state,
        Api::StandardCardUpdate,
        Auth::new_token(&headers),
        record,
        |inner, ctx| update_card(inner, ctx, parsed?),
    )
    .await
}

fn send_card(inner: &mut Inner, ctx: &CallCtx, fields: Fields) -> Result<Value, ApiError> {
    let app = ctx.app_key()?.to_owned();
    let template_id = fields.str("cardTemplateId")?.to_owned();
    let biz_id = fields.str("cardBizId")?.to_owned();
    let robot_code = super::own_robot(inner, ctx, &fields)?;
    let card_data = fields.json_string_object("cardData")?;
    check_card_data(&template_id, &card_data)?;
    check_send_options(&fields)?;
    fields.opt_str("callbackUrl")?;
    let group = fields.opt_str("openConversationId")?;
    let receiver = match fields.get("singleChatReceiver") {
        None => None,
        Some(_) => Some(fields.json_string_object("singleChatReceiver")?),
    };
    let (target, chat) = match (group, receiver) {
        (Some(group), None) => {
            super::robot::robot_in_group(inner, &robot_code, group)?;
            (
                group.to_owned(),
                Recipient::Group {
                    open_conversation_id: group.to_owned(),
                },
            )
        }
        (None, Some(receiver)) => {
            let user_id = receiver.str("userId").map_err(|_| {
                ApiError::invalid("singleChatReceiver", "must encode {\"userId\":\"…\"}")
            })?;
            if inner.directory.user(user_id).is_none() {
                return Err(ApiError::NotFound {
                    what: "singleChatReceiver.userId",
                    id: user_id.to_owned(),
                });
            }
            (
                user_id.to_owned(),
                Recipient::OneToOne {
                    user_ids: vec![user_id.to_owned()],
                },
            )
        }
        (None, None) => return Err(ApiError::missing("openConversationId")),
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "openConversationId",
                "give either openConversationId (group) or singleChatReceiver (1:1), not both",
            ))
        }
    };
    let key = scoped(&app, &biz_id);
    if inner.cards.standard.contains(&key) {
        return Err(ApiError::invalid(
            "cardBizId",
            format!(
                "{biz_id:?} was already sent; update it with PUT /v1.0/im/robots/interactiveCards"
            ),
        ));
    }
    let process_query_key = ids::process_query_key();
    inner.messages.push(SentMessage {
        process_query_key: process_query_key.clone(),
        robot_code,
        recipient: chat,
        kind: "StandardCard".to_owned(),
        content: card_data.to_value(),
        sent_at_ms: ctx.now_ms,
        recalled: false,
    });
    inner.cards.standard.insert(
        key,
        StandardCard {
            app,
            card_biz_id: biz_id,
            card_template_id: template_id,
            target,
            card_data: card_data.to_value(),
            updates: 0,
            process_query_key: process_query_key.clone(),
        },
    );
    Ok(json!({ "processQueryKey": process_query_key }))
}

fn update_card(inner: &mut Inner, ctx: &CallCtx, fields: Fields) -> Result<Value, ApiError> {
    let app = ctx.app_key()?.to_owned();
    let biz_id = fields.str("cardBizId")?;
    let card_data = fields.json_string_object("cardData")?;
    fields.opt_object("updateOptions")?;
    let card = inner
        .cards
        .standard
        .get_mut(&scoped(&app, biz_id))
        .ok_or_else(|| ApiError::NotFound {
            what: "cardBizId",
            id: biz_id.to_owned(),
        })?;
    check_card_data(&card.card_template_id, &card_data)?;
    card.card_data = card_data.to_value();
    card.updates += 1;
    Ok(json!({ "processQueryKey": card.process_query_key }))
}

/// A StandardCard's data is `{config, header, contents[…]}`; when present, `contents` must be
/// a list of objects each with a `type`.
fn check_card_data(template_id: &str, card_data: &Fields) -> Result<(), ApiError> {
    if template_id != "StandardCard" {
        return Ok(());
    }
    match card_data.get("contents") {
        None => Ok(()),
        Some(Value::Array(items))
            if items
                .iter()
                .all(|item| item.get("type").is_some_and(Value::is_string)) =>
        {
            Ok(())
        }
        Some(_) => Err(ApiError::invalid(
            "cardData",
            "StandardCard contents must be a list of objects with a string \"type\"",
        )),
    }
}

/// `sendOptions`, when present: its `*Json` fields are JSON-encoded strings, `atAll` a boolean.
fn check_send_options(fields: &Fields) -> Result<(), ApiError> {
    let Some(options) = fields.opt_object("sendOptions")? else {
        return Ok(());
    };
    for json_field in ["atUserListJson", "receiverListJson", "cardPropertyJson"] {
        if let Some(text) = options.opt_str(json_field)? {
            serde_json::from_str::<Value>(text).map_err(|err| {
                ApiError::invalid(
                    format!("sendOptions.{json_field}"),
                    format!("must be a JSON-encoded string: {err}"),
                )
            })?;
        }
    }
    options.opt_bool("atAll")?;
    Ok(())
}
