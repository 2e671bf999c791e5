//! Contact APIs (PROTOCOL §5).

use dingtalk_sim::Api;
use serde_json::{json, Value};

use crate::helpers::TestSim;

fn page(dept_id: i64, cursor: i64, size: i64) -> Value {
    json!({"dept_id": dept_id, "cursor": cursor, "size": size, "order_field": "custom",
           "contain_access_limit": false, "language": "zh_CN"})
}

#[tokio::test]
async fn listsimple_pages_through_a_departments_members() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    let first = t
        .post_old(Api::UserListSimple.path(), &token, page(2, 0, 1))
        .await;
    let result = &first.assert_old_ok()["result"];
    assert_eq!(
        result["list"],
        json!([{"userid": "user001", "name": "Li Lei"}])
    );
    assert_eq!(result["has_more"], true);
    assert_eq!(result["next_cursor"], 1);
    let second = t
        .post_old(Api::UserListSimple.path(), &token, page(2, 1, 100))
        .await;
    let result = &second.assert_old_ok()["result"];
    assert_eq!(result["list"][0]["userid"], "user002");
    assert_eq!(result["has_more"], false);
    assert!(result.get("next_cursor").is_none());
}

#[tokio::test]
async fn v2_user_list_returns_details() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    let answer = t
        .post_old(Api::UserList.path(), &token, page(4, 0, 10))
        .await;
    let list = answer.assert_old_ok()["result"]["list"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 2);
    for field in [
        "userid",
        "unionid",
        "name",
        "dept_id_list",
        "active",
        "title",
        "email",
    ] {
        assert!(list[0].get(field).is_some(), "{field}");
    }
}

#[tokio::test]
async fn member_listing_refuses_out_of_range_size_and_cursor() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    for body in [
        page(1, 0, 0),
        page(1, 0, 101),
        page(1, -1, 10),
        page(1, 100_001, 10),
        page(0, 0, 10),
    ] {
        t.post_old(Api::UserListSimple.path(), &token, body)
            .await
            .assert_errcode(40035);
    }
    t.assert_only_refused(Api::UserListSimple, 5, "dept_id");
}

#[tokio::test]
async fn member_listing_refuses_missing_fields_and_bad_order_field() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    t.post_old(
        Api::UserList.path(),
        &token,
        json!({"cursor": 0, "size": 10}),
    )
    .await
    .assert_errcode(40035);
    t.post_old(
        Api::UserList.path(),
        &token,
        json!({"dept_id": 1, "cursor": 0}),
    )
    .await
    .assert_errcode(40035);
    let mut bad_order = page(1, 0, 10);
    bad_order["order_field"] = json!("name");
    t.post_old(Api::UserList.path(), &token, bad_order)
        .await
        .assert_errcode(40035);
    t.post_old(
        Api::UserList.path(),
        &token,
        json!({"dept_id": "1", "cursor": 0, "size": 10}),
    )
    .await
    .assert_errcode(40035);
    t.assert_only_refused(Api::UserList, 4, "integer");
}

#[tokio::test]
async fn member_listing_of_an_unknown_department_is_60003() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    t.post_old(Api::UserListSimple.path(), &token, page(99, 0, 10))
        .await
        .assert_errcode(60003);
}

#[tokio::test]
async fn listsub_returns_one_level_below_the_root_by_default() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    let answer = t
        .post_old(Api::DepartmentListSub.path(), &token, json!({}))
        .await;
    let ids: Vec<i64> = answer.assert_old_ok()["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["dept_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![2, 3]);
    let deeper = t
        .post_old(Api::DepartmentListSub.path(), &token, json!({"dept_id": 2}))
        .await;
    assert_eq!(deeper.assert_old_ok()["result"][0]["parent_id"], 2);
}

#[tokio::test]
async fn listsub_of_an_unknown_department_is_60003() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    t.post_old(
        Api::DepartmentListSub.path(),
        &token,
        json!({"dept_id": 42}),
    )
    .await
    .assert_errcode(60003);
}

#[tokio::test]
async fn getbyunionid_maps_a_unionid_to_a_userid() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    let answer = t
        .post_old(
            Api::UserGetByUnionId.path(),
            &token,
            json!({"unionid": "union-user003"}),
        )
        .await;
    assert_eq!(
        answer.assert_old_ok()["result"],
        json!({"userid": "user003", "contact_type": 0})
    );
}

#[tokio::test]
async fn getbyunionid_of_an_unknown_or_missing_unionid_is_refused() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    t.post_old(
        Api::UserGetByUnionId.path(),
        &token,
        json!({"unionid": "nobody"}),
    )
    .await
    .assert_errcode(60121);
    t.post_old(Api::UserGetByUnionId.path(), &token, json!({}))
        .await
        .assert_errcode(40035);
    t.assert_only_refused(Api::UserGetByUnionId, 2, "unionid is mandatory");
}
