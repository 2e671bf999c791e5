//! The request of every DingTalk call the engine makes (pure): field names and shapes exactly as
//! PROTOCOL §4–§5 spell them. The client layer adds tokens, limits and retries.

use common::bus::command::Mentions;
use serde_json::{json, Map, Value};

use crate::content::RobotMessage;
use crate::dingtalk::{Api, ApiCall, CallBody};
use crate::plan::{CardReceiver, Space};

fn json_call(api: Api, body: Value) -> ApiCall {
    ApiCall {
        api,
        body: CallBody::Json(body),
        query: Vec::new(),
    }
}

/// 1:1 send to up to 20 userIds (§4.2).
pub fn batch_send(robot_code: &str, user_ids: &[String], message: &RobotMessage) -> ApiCall {
    json_call(
        Api::BatchSend,
        json!({
            "robotCode": robot_code,
            "userIds": user_ids,
            "msgKey": message.msg_key,
            "msgParam": message.msg_param,
        }),
    )
}

/// 1:1 send addressed by openIds, as the anchor plugin does. UNVERIFIED (PROTOCOL §4.2, §8.4):
/// the official SDK has no `openIds` field on batchSend. Kept in this one function so that the
/// day DingTalk documents the real way, only this changes.
pub fn open_id_batch_send(
    robot_code: &str,
    open_ids: &[String],
    message: &RobotMessage,
) -> ApiCall {
    json_call(
        Api::BatchSend,
        json!({
            "robotCode": robot_code,
            "openIds": open_ids,
            "msgKey": message.msg_key,
            "msgParam": message.msg_param,
        }),
    )
}

/// Group send (§4.3).
pub fn group_send(robot_code: &str, chat_id: &str, message: &RobotMessage) -> ApiCall {
    json_call(
        Api::GroupSend,
        json!({
            "robotCode": robot_code,
            "openConversationId": chat_id,
            "msgKey": message.msg_key,
            "msgParam": message.msg_param,
        }),
    )
}

/// 1:1 read status of a sent message (§4.4), the check before deciding a send is unknown.
pub fn read_status(robot_code: &str, process_query_key: &str) -> ApiCall {
    ApiCall {
        api: Api::ReadStatus,
        body: CallBody::None,
        query: vec![
            ("robotCode".to_owned(), robot_code.to_owned()),
            ("processQueryKey".to_owned(), process_query_key.to_owned()),
        ],
    }
}

/// 1:1 recall (§4.4; lower-case `oto` in the path is the client's business).
pub fn batch_recall(robot_code: &str, process_query_keys: &[String]) -> ApiCall {
    json_call(
        Api::BatchRecall,
        json!({ "robotCode": robot_code, "processQueryKeys": process_query_keys }),
    )
}

/// Group recall (§4.4).
pub fn group_recall(robot_code: &str, chat_id: &str, process_query_keys: &[String]) -> ApiCall {
    json_call(
        Api::GroupRecall,
        json!({
            "robotCode": robot_code,
            "openConversationId": chat_id,
            "processQueryKeys": process_query_keys,
        }),
    )
}

/// StandardCard send (§4.5). `cardData` and `singleChatReceiver` are JSON strings; the card
/// carries the integration's `callbackRouteKey` so its button presses find their way back, and
/// for an HTTP integration the `callbackUrl` the API itself documents.
pub fn card_send(
    robot_code: &str,
    card_biz_id: &str,
    receiver: &CardReceiver,
    card_data: &Value,
    mentions: &Mentions,
    (callback_route_key, callback): (&str, &CallbackType),
) -> ApiCall {
    let mut body = json!({
        "cardTemplateId": "StandardCard",
        "cardBizId": card_biz_id,
        "robotCode": robot_code,
        "cardData": card_data.to_string(),
        "callbackRouteKey": callback_route_key,
    });
    if let CallbackType::Http { url } | CallbackType::Unregistered { url } = callback {
        body["callbackUrl"] = json!(url);
    }
    match receiver {
        CardReceiver::Group(chat_id) => {
            body["openConversationId"] = json!(chat_id);
            if mentions.all || !mentions.user_ids.is_empty() {
                let at: Vec<Value> = mentions
                    .user_ids
                    .iter()
                    // DingTalk wants a nickName too; the command only knows userIds.
                    .map(|id| json!({ "nickName": id, "userId": id }))
                    .collect();
                body["sendOptions"] = json!({
                    "atAll": mentions.all,
                    "atUserListJson": Value::Array(at).to_string(),
                });
            }
        }
        CardReceiver::User(user_id) => {
            body["singleChatReceiver"] = json!(json!({ "userId": user_id }).to_string());
        }
    }
    json_call(Api::CardSend, body)
}

/// StandardCard update, replacing the whole `cardData` (§4.5).
pub fn card_update(card_biz_id: &str, card_data: &Value) -> ApiCall {
    json_call(
        Api::CardUpdate,
        json!({
            "cardBizId": card_biz_id,
            "cardData": card_data.to_string(),
            "updateOptions": { "updateCardDataByKey": false },
        }),
    )
}

/// How a card's button presses reach us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallbackType {
    /// Over the Stream connection.
    Stream,
    /// To the URL registered for the route key (StandardCards name it themselves).
    Http {
        /// `{PUBLIC_BASE_URL}/api/dingtalk/webhook/{id}/card`.
        url: String,
    },
    /// Not registered (no `PUBLIC_BASE_URL`): say nothing and let DingTalk decide.
    Unset,
    /// The URL could not be registered this time (DingTalk refused or failed): StandardCards
    /// still name it, template cards say nothing (their route key leads nowhere yet).
    Unregistered {
        /// `{PUBLIC_BASE_URL}/api/dingtalk/webhook/{id}/card`.
        url: String,
    },
}

/// Card instance creation (§4.6 step 1).
pub fn card_instance_create(
    out_track_id: &str,
    template_id: &str,
    params: &Map<String, Value>,
    callback_route_key: &str,
    callback: &CallbackType,
) -> ApiCall {
    let mut body = json!({
        "cardTemplateId": template_id,
        "outTrackId": out_track_id,
        "cardData": { "cardParamMap": params },
        "callbackRouteKey": callback_route_key,
        "imGroupOpenSpaceModel": { "supportForward": true },
        "imRobotOpenSpaceModel": { "supportForward": true },
    });
    match callback {
        CallbackType::Stream => body["callbackType"] = json!("STREAM"),
        CallbackType::Http { .. } => body["callbackType"] = json!("HTTP"),
        CallbackType::Unset | CallbackType::Unregistered { .. } => {}
    }
    json_call(Api::CardInstanceCreate, body)
}

/// Card instance delivery to every space at once (§4.6 step 2; upper-case space types, as
/// working code sends them).
pub fn card_instance_deliver(
    robot_code: &str,
    out_track_id: &str,
    spaces: &[Space],
    mentions: &Mentions,
) -> ApiCall {
    let ids: Vec<String> = spaces
        .iter()
        .map(|space| match space {
            Space::Group(id) => format!("IM_GROUP.{id}"),
            Space::Robot(id) => format!("IM_ROBOT.{id}"),
        })
        .collect();
    let mut body = json!({
        "outTrackId": out_track_id,
        "userIdType": 1,
        "openSpaceId": format!("dtv1.card//{}", ids.join(";")),
    });
    if spaces.iter().any(|s| matches!(s, Space::Group(_))) {
        let mut model = json!({ "robotCode": robot_code });
        if !mentions.user_ids.is_empty() {
            let at: Map<String, Value> = mentions
                .user_ids
                .iter()
                .map(|id| (id.clone(), json!(id)))
                .collect();
            model["atUserIds"] = Value::Object(at);
        }
        body["imGroupOpenDeliverModel"] = model;
    }
    if spaces.iter().any(|s| matches!(s, Space::Robot(_))) {
        body["imRobotOpenDeliverModel"] =
            json!({ "spaceType": "IM_ROBOT", "robotCode": robot_code });
    }
    json_call(Api::CardInstanceDeliver, body)
}

/// Card instance update, merging the given parameters (§4.6 step 4).
pub fn card_instance_update(out_track_id: &str, params: &Map<String, Value>) -> ApiCall {
    json_call(
        Api::CardInstanceUpdate,
        json!({
            "outTrackId": out_track_id,
            "cardData": { "cardParamMap": params },
            "cardUpdateOptions": { "updateCardDataByKey": true },
        }),
    )
}

/// Registration of the HTTP URL card button presses are posted to (§4.6b).
pub fn card_callback_register(callback_route_key: &str, callback_url: &str) -> ApiCall {
    json_call(
        Api::CardCallbackRegister,
        json!({
            "callbackRouteKey": callback_route_key,
            "callbackUrl": callback_url,
            "forceUpdate": true,
        }),
    )
}

/// Media upload (§4.8), multipart field `media`.
pub fn media_upload(kind: &str, file_name: &str, mime: &str, bytes: bytes::Bytes) -> ApiCall {
    ApiCall {
        api: Api::MediaUpload,
        body: CallBody::Multipart {
            field: "media".to_owned(),
            file_name: file_name.to_owned(),
            mime: mime.to_owned(),
            bytes,
        },
        query: vec![("type".to_owned(), kind.to_owned())],
    }
}

/// unionId → userId (§5).
pub fn get_by_union_id(union_id: &str) -> ApiCall {
    json_call(Api::GetByUnionId, json!({ "unionid": union_id }))
}

/// One page of a department's members, with details (§5).
pub fn user_list(dept_id: i64, cursor: i64, size: u32) -> ApiCall {
    json_call(
        Api::UserList,
        json!({
            "dept_id": dept_id,
            "cursor": cursor,
            "size": size,
            "order_field": "custom",
            "contain_access_limit": false,
            "language": "zh_CN",
        }),
    )
}

/// The direct sub-departments of a department (§5).
pub fn dept_list_sub(dept_id: i64) -> ApiCall {
    json_call(
        Api::DeptListSub,
        json!({ "dept_id": dept_id, "language": "zh_CN" }),
    )
}

/// A classic robot body to a custom robot (§4.9) or a session webhook (§2.3).
pub fn classic(api: Api, body: &Value) -> ApiCall {
    json_call(api, body.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(call: &ApiCall) -> &Value {
        match &call.body {
            CallBody::Json(value) => value,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_one_to_one_card_names_its_receiver_in_a_json_string() {
        let call = card_send(
            "robot",
            "c1",
            &CardReceiver::User("u1".into()),
            &json!({"contents": []}),
            &Mentions::default(),
            ("route", &CallbackType::Stream),
        );
        let body = body(&call);
        assert_eq!(body["singleChatReceiver"], r#"{"userId":"u1"}"#);
        assert_eq!(body["cardData"], r#"{"contents":[]}"#);
        assert_eq!(body["callbackRouteKey"], "route");
        assert!(body.get("openConversationId").is_none());
        assert!(body.get("callbackUrl").is_none());
    }

    #[test]
    fn group_card_mentions_go_in_at_user_list_json() {
        let mentions = Mentions {
            user_ids: vec!["u1".into()],
            all: true,
        };
        let call = card_send(
            "r",
            "c1",
            &CardReceiver::Group("cid".into()),
            &json!({}),
            &mentions,
            ("k", &CallbackType::Unset),
        );
        let options = &body(&call)["sendOptions"];
        assert_eq!(options["atAll"], true);
        assert_eq!(
            options["atUserListJson"],
            r#"[{"nickName":"u1","userId":"u1"}]"#
        );
    }

    #[test]
    fn a_template_card_is_delivered_to_all_spaces_in_one_open_space_id() {
        let call = card_instance_deliver(
            "robot",
            "c1",
            &[Space::Group("cid1".into()), Space::Robot("u1".into())],
            &Mentions::default(),
        );
        let body = body(&call);
        assert_eq!(body["openSpaceId"], "dtv1.card//IM_GROUP.cid1;IM_ROBOT.u1");
        assert_eq!(body["imGroupOpenDeliverModel"]["robotCode"], "robot");
        assert_eq!(body["imRobotOpenDeliverModel"]["spaceType"], "IM_ROBOT");
    }

    #[test]
    fn open_ids_travel_in_their_own_field() {
        let message = RobotMessage {
            msg_key: "sampleText",
            msg_param: "{}".into(),
        };
        let call = open_id_batch_send("r", &["o1".into()], &message);
        assert_eq!(body(&call)["openIds"], json!(["o1"]));
        assert!(body(&call).get("userIds").is_none());
    }
}
