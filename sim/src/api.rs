//! The DingTalk endpoints the simulator serves, as one closed set.
//!
//! Rate limits, fault rules and the call record are all keyed by [`Api`], so a typo in a fault
//! rule is refused when it is registered instead of silently matching nothing.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Which of DingTalk's two API generations an endpoint belongs to; it decides the error shape
/// (PROTOCOL §6.1) and where the access token travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `api.dingtalk.com/v1.0/…`: token in the `x-acs-dingtalk-access-token` header, errors as a
    /// non-2xx status with `{"code","message","requestid"}`.
    New,
    /// `oapi.dingtalk.com/…`: token in `?access_token=`, errors as HTTP 200 with
    /// `{"errcode","errmsg"}`. Webhook robots answer in this shape too.
    Old,
}

/// One endpoint the simulator serves. "API" in DingTalk's per-(app, API) rate limit means this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Api {
    /// `POST /v1.0/oauth2/accessToken`
    NewToken,
    /// `GET /gettoken`
    OldToken,
    /// `POST /v1.0/robot/oToMessages/batchSend`
    RobotBatchSend,
    /// `POST /v1.0/robot/otoMessages/batchRecall` (lower-case `oto`, unlike send)
    RobotBatchRecall,
    /// `GET /v1.0/robot/oToMessages/readStatus`
    RobotReadStatus,
    /// `POST /v1.0/robot/groupMessages/send`
    GroupSend,
    /// `POST /v1.0/robot/groupMessages/recall`
    GroupRecall,
    /// `POST /v1.0/robot/messageFiles/download`
    MessageFileDownload,
    /// `POST /v1.0/im/v1.0/robot/interactiveCards/send`
    StandardCardSend,
    /// `PUT /v1.0/im/robots/interactiveCards`
    StandardCardUpdate,
    /// `POST /v1.0/card/instances`
    CardCreate,
    /// `POST /v1.0/card/instances/deliver`
    CardDeliver,
    /// `POST /v1.0/card/instances/createAndDeliver`
    CardCreateAndDeliver,
    /// `PUT /v1.0/card/instances`
    CardUpdate,
    /// `PUT /v1.0/card/streaming`
    CardStreaming,
    /// `POST /v1.0/card/callbacks/register`
    CardCallbackRegister,
    /// `POST /media/upload`
    MediaUpload,
    /// `POST /topapi/user/listsimple`
    UserListSimple,
    /// `POST /topapi/v2/user/list`
    UserList,
    /// `POST /topapi/v2/department/listsub`
    DepartmentListSub,
    /// `POST /topapi/user/getbyunionid`
    UserGetByUnionId,
    /// `POST /robot/send` (custom group robot webhook)
    CustomRobotSend,
    /// `POST /robot/sendBySession` (a robot callback's `sessionWebhook`)
    SessionSend,
}

impl Api {
    /// Every endpoint, in the order the README lists them.
    pub const ALL: [Api; 23] = [
        Api::NewToken,
        Api::OldToken,
        Api::RobotBatchSend,
        Api::RobotBatchRecall,
        Api::RobotReadStatus,
        Api::GroupSend,
        Api::GroupRecall,
        Api::MessageFileDownload,
        Api::StandardCardSend,
        Api::StandardCardUpdate,
        Api::CardCreate,
        Api::CardDeliver,
        Api::CardCreateAndDeliver,
        Api::CardUpdate,
        Api::CardStreaming,
        Api::CardCallbackRegister,
        Api::MediaUpload,
        Api::UserListSimple,
        Api::UserList,
        Api::DepartmentListSub,
        Api::UserGetByUnionId,
        Api::CustomRobotSend,
        Api::SessionSend,
    ];

    /// The stable name used in fault rules, `/_sim/calls?api=` and the call record.
    pub fn name(self) -> &'static str {
        match self {
            Api::NewToken => "oauth2.accessToken",
            Api::OldToken => "gettoken",
            Api::RobotBatchSend => "robot.batchSend",
            Api::RobotBatchRecall => "robot.batchRecall",
            Api::RobotReadStatus => "robot.readStatus",
            Api::GroupSend => "robot.groupSend",
            Api::GroupRecall => "robot.groupRecall",
            Api::MessageFileDownload => "robot.messageFiles.download",
            Api::StandardCardSend => "standardCard.send",
            Api::StandardCardUpdate => "standardCard.update",
            Api::CardCreate => "card.create",
            Api::CardDeliver => "card.deliver",
            Api::CardCreateAndDeliver => "card.createAndDeliver",
            Api::CardUpdate => "card.update",
            Api::CardStreaming => "card.streaming",
            Api::CardCallbackRegister => "card.callbacks.register",
            Api::MediaUpload => "media.upload",
            Api::UserListSimple => "user.listsimple",
            Api::UserList => "user.list",
            Api::DepartmentListSub => "department.listsub",
            Api::UserGetByUnionId => "user.getbyunionid",
            Api::CustomRobotSend => "robot.send",
            Api::SessionSend => "robot.sendBySession",
        }
    }

    /// HTTP method and path, exactly as DingTalk spells them (case matters).
    pub fn route(self) -> (&'static str, &'static str) {
        match self {
            Api::NewToken => ("POST", "/v1.0/oauth2/accessToken"),
            Api::OldToken => ("GET", "/gettoken"),
            Api::RobotBatchSend => ("POST", "/v1.0/robot/oToMessages/batchSend"),
            Api::RobotBatchRecall => ("POST", "/v1.0/robot/otoMessages/batchRecall"),
            Api::RobotReadStatus => ("GET", "/v1.0/robot/oToMessages/readStatus"),
            Api::GroupSend => ("POST", "/v1.0/robot/groupMessages/send"),
            Api::GroupRecall => ("POST", "/v1.0/robot/groupMessages/recall"),
            Api::MessageFileDownload => ("POST", "/v1.0/robot/messageFiles/download"),
            Api::StandardCardSend => ("POST", "/v1.0/im/v1.0/robot/interactiveCards/send"),
            Api::StandardCardUpdate => ("PUT", "/v1.0/im/robots/interactiveCards"),
            Api::CardCreate => ("POST", "/v1.0/card/instances"),
            Api::CardDeliver => ("POST", "/v1.0/card/instances/deliver"),
            Api::CardCreateAndDeliver => ("POST", "/v1.0/card/instances/createAndDeliver"),
            Api::CardUpdate => ("PUT", "/v1.0/card/instances"),
            Api::CardStreaming => ("PUT", "/v1.0/card/streaming"),
            Api::CardCallbackRegister => ("POST", "/v1.0/card/callbacks/register"),
            Api::MediaUpload => ("POST", "/media/upload"),
            Api::UserListSimple => ("POST", "/topapi/user/listsimple"),
            Api::UserList => ("POST", "/topapi/v2/user/list"),
            Api::DepartmentListSub => ("POST", "/topapi/v2/department/listsub"),
            Api::UserGetByUnionId => ("POST", "/topapi/user/getbyunionid"),
            Api::CustomRobotSend => ("POST", "/robot/send"),
            Api::SessionSend => ("POST", "/robot/sendBySession"),
        }
    }

    /// The path alone.
    pub fn path(self) -> &'static str {
        self.route().1
    }

    /// The API generation, which decides the error shape.
    pub fn family(self) -> Family {
        if self.path().starts_with("/v1.0/") {
            Family::New
        } else {
            Family::Old
        }
    }

    /// Parses a [`name`](Api::name), for the control API. (Paths are not accepted: create and
    /// update of card instances share one.)
    pub fn parse(text: &str) -> Option<Api> {
        Api::ALL.into_iter().find(|api| api.name() == text)
    }

    /// All names, comma-separated, for "allowed values" in error messages.
    pub fn names() -> String {
        Api::ALL.map(Api::name).join(", ")
    }
}

impl fmt::Display for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Api {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Api {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        Api::parse(&name).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown api {name:?}; allowed: {}", Api::names()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_parses_back_from_its_name() {
        for api in Api::ALL {
            assert_eq!(Api::parse(api.name()), Some(api));
        }
        assert_eq!(Api::parse("robot.batchsend"), None);
    }

    #[test]
    fn send_and_recall_paths_differ_in_case_as_dingtalk_spells_them() {
        assert!(Api::RobotBatchSend.path().contains("/oToMessages/"));
        assert!(Api::RobotReadStatus.path().contains("/oToMessages/"));
        assert!(Api::RobotBatchRecall.path().contains("/otoMessages/"));
    }

    #[test]
    fn new_and_old_api_paths_do_not_collide() {
        let mut routes: Vec<_> = Api::ALL.iter().map(|api| api.route()).collect();
        routes.sort_unstable();
        routes.dedup();
        assert_eq!(routes.len(), Api::ALL.len());
        assert_eq!(Api::MediaUpload.family(), Family::Old);
        assert_eq!(Api::CardStreaming.family(), Family::New);
    }
}
