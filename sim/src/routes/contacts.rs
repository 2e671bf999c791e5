//! Contact APIs of the old API (PROTOCOL §5): department members (basic and detailed),
//! sub-departments, and unionId → userId, paged and bounded the way the SDK checks them.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::api::Api;
use crate::body::Fields;
use crate::directory::{User, ROOT_DEPT_ID};
use crate::error::ApiError;
use crate::gate::{serve_call, Auth};
use crate::state::{Inner, SimState};

/// Largest page (`size`).
const MAX_PAGE: i64 = 100;
/// Largest `cursor` the SDK accepts.
const MAX_CURSOR: i64 = 100_000;
/// Allowed `order_field` values.
const ORDER_FIELDS: [&str; 5] = [
    "entry_asc",
    "entry_desc",
    "modify_asc",
    "modify_desc",
    "custom",
];

pub(super) fn routes() -> Router<SimState> {
    Router::new()
        .route(Api::UserListSimple.path(), post(list_simple))
        .route(Api::UserList.path(), post(list_detailed))
        .route(Api::DepartmentListSub.path(), post(list_sub))
        .route(Api::UserGetByUnionId.path(), post(by_unionid))
}

/// Runs an old-API JSON endpoint through the gate.
async fn oapi_call(
    state: SimState,
    api: Api,
    query: HashMap<String, String>,
    body: Bytes,
    logic: fn(&mut Inner, Fields) -> Result<Value, ApiError>,
) -> Response {
    let parsed = Fields::from_body(&body);
    let record = super::recordable(&parsed, &body);
    serve_call(
        &state,
        api,
        Auth::OldToken(super::old_token(&query)),
        record,
        |inner, _ctx| logic(inner, parsed?),
    )
    .await
}

async fn list_simple(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    oapi_call(state, Api::UserListSimple, query, body, |inner, fields| {
        members_page(
            inner,
            &fields,
            |user| json!({ "userid": user.userid, "name": user.name }),
        )
    })
    .await
}

async fn list_detailed(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    oapi_call(state, Api::UserList, query, body, |inner, fields| {
        members_page(inner, &fields, |user| {
            json!({
                "userid": user.userid,
                "unionid": user.unionid,
                "name": user.name,
                "avatar": "",
                "state_code": "86",
                "mobile": user.mobile,
                "email": user.email,
                "org_email": "",
                "title": user.title,
                "job_number": "",
                "dept_id_list": user.dept_ids,
                "active": user.active,
                "admin": user.admin,
                "boss": user.boss,
                "leader": false,
                "extension": "{}",
            })
        })
    })
    .await
}

async fn list_sub(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    oapi_call(
        state,
        Api::DepartmentListSub,
        query,
        body,
        |inner, fields| {
            let dept_id = fields.opt_int("dept_id")?.unwrap_or(ROOT_DEPT_ID);
            fields.opt_str("language")?;
            if inner.directory.department(dept_id).is_none() {
                return Err(ApiError::DepartmentNotFound(dept_id));
            }
            let subs: Vec<Value> = inner
                .directory
                .children(dept_id)
                .map(|dept| {
                    json!({
                        "dept_id": dept.dept_id,
                        "name": dept.name,
                        "parent_id": dept.parent_id,
                        "auto_add_user": true,
                        "create_dept_group": false,
                    })
                })
                .collect();
            Ok(json!({ "result": subs }))
        },
    )
    .await
}

async fn by_unionid(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    oapi_call(
        state,
        Api::UserGetByUnionId,
        query,
        body,
        |inner, fields| {
            let unionid = fields.str("unionid")?;
            if let Some(user) = inner.directory.user_by_unionid(unionid) {
                return Ok(json!({ "result": { "userid": user.userid, "contact_type": 0 } }));
            }
            let contact = inner
                .directory
                .external_by_unionid(unionid)
                .ok_or_else(|| ApiError::UserNotFound(unionid.to_owned()))?;
            Ok(json!({ "result": { "userid": contact.userid, "contact_type": 1 } }))
        },
    )
    .await
}

/// One page of a department's direct members, each rendered by `item`.
fn members_page(
    inner: &Inner,
    fields: &Fields,
    item: fn(&User) -> Value,
) -> Result<Value, ApiError> {
    let dept_id = fields.int("dept_id")?;
    if dept_id < ROOT_DEPT_ID {
        return Err(ApiError::invalid(
            "dept_id",
            "must be at least 1 (the root)",
        ));
    }
    let cursor = fields.int("cursor")?;
    if !(0..=MAX_CURSOR).contains(&cursor) {
        return Err(ApiError::invalid(
            "cursor",
            format!("{cursor} is out of range; allowed: 0..={MAX_CURSOR}"),
        ));
    }
    let size = fields.int("size")?;
    if !(1..=MAX_PAGE).contains(&size) {
        return Err(ApiError::invalid(
            "size",
            format!("{size} is out of range; allowed: 1..={MAX_PAGE}"),
        ));
    }
    if let Some(order) = fields.opt_str("order_field")? {
        if !ORDER_FIELDS.contains(&order) {
            return Err(ApiError::invalid(
                "order_field",
                format!(
                    "{order:?} is not allowed; allowed: {}",
                    ORDER_FIELDS.join(", ")
                ),
            ));
        }
    }
    fields.opt_bool("contain_access_limit")?;
    fields.opt_str("language")?;
    if inner.directory.department(dept_id).is_none() {
        return Err(ApiError::DepartmentNotFound(dept_id));
    }
    // Both bounds were checked above, so the conversions cannot fail.
    let start = usize::try_from(cursor).unwrap_or(0);
    let size = usize::try_from(size).unwrap_or(1);
    let members: Vec<&User> = inner.directory.members(dept_id).collect();
    let page: Vec<Value> = members
        .iter()
        .skip(start)
        .take(size)
        .map(|u| item(u))
        .collect();
    let next = start + page.len();
    let has_more = next < members.len();
    let mut result = json!({ "has_more": has_more, "list": page });
    if has_more {
        result["next_cursor"] = json!(next);
    }
    Ok(json!({ "result": result }))
}
