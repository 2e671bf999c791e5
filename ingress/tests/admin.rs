//! The admin listener end to end: a real ingress on free ports, its own nats-server and
//! redis-server, and the project's DingTalk simulator for the preflight's calls.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use dingtalk_sim::{
    Api, AppCredentials, CallFilter, Fault, FaultCount, FaultKind, RunningSim, SimConfig, Simulator,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use support::{spawn_app, spawn_app_with, TestApp, ADMIN_TOKEN, PUBLIC_BASE_URL};

const CLIENT_SECRET: &str = "app-secret-that-must-never-show-0123";
const CALLBACK_TOKEN: &str = "callback-token-never-shown";
const AES_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";

fn integration_body(client_id: &str, client_secret: &str) -> Value {
    json!({
        "name": "Acme",
        "client_id": client_id,
        "client_secret": client_secret,
        "callback_token": CALLBACK_TOKEN,
        "callback_aes_key": AES_KEY,
    })
}

async fn put_integration(app: &TestApp, id: &str, body: &Value) -> reqwest::Response {
    app.admin(Method::PUT, &format!("/api/dingtalk/integrations/{id}"))
        .json(body)
        .send()
        .await
        .expect("admin answers")
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

// --- DingTalk: the project's simulator ----------------------------------------------------

/// Starts the DingTalk simulator with one app, `dingkey` / [`CLIENT_SECRET`], and an ingress
/// pointing both DingTalk base URLs at it. Keep the simulator: dropping it stops it.
async fn spawn_app_with_sim() -> (TestApp, RunningSim) {
    let sim = Simulator::start(
        SimConfig::local().with_app(AppCredentials::new("dingkey", CLIENT_SECRET)),
    )
    .await
    .expect("the simulator starts");
    let base = sim.base_url();
    let app = spawn_app_with(&[("DINGTALK_API_URL", &base), ("DINGTALK_OAPI_URL", &base)]).await;
    (app, sim)
}

async fn preflight(app: &TestApp, id: &str) -> (StatusCode, Value) {
    let response = app
        .admin(
            Method::POST,
            &format!("/api/dingtalk/integrations/{id}/test"),
        )
        .send()
        .await
        .unwrap();
    let status = response.status();
    (status, json_of(response).await)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report}"))
}

// --- Authorization ------------------------------------------------------------------------

#[tokio::test]
async fn admin_calls_need_the_bearer_token_but_probes_do_not() {
    let app = spawn_app().await;
    let path = "/api/dingtalk/integrations";

    let none = app.anonymous(Method::GET, path).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.headers().contains_key("www-authenticate"));
    assert_eq!(error_code(&json_of(none).await), "unauthorized");

    let wrong = app
        .anonymous(Method::GET, path)
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let body = json_of(wrong).await;
    assert!(!body.to_string().contains(ADMIN_TOKEN));

    let right = app.admin(Method::GET, path).send().await.unwrap();
    assert_eq!(right.status(), StatusCode::OK);
    assert_eq!(json_of(right).await, json!({"integrations": []}));

    // A write without the token changes nothing.
    let sneaky = app
        .anonymous(Method::PUT, "/api/dingtalk/integrations/acme")
        .json(&integration_body("dingkey", CLIENT_SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(sneaky.status(), StatusCode::UNAUTHORIZED);
    let get = app
        .admin(Method::GET, "/api/dingtalk/integrations/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND);

    for probe in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let response = app.anonymous(Method::GET, probe).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{probe}");
    }
}

#[tokio::test]
async fn without_admin_token_the_admin_api_refuses_everything_but_probes_answer() {
    let app = spawn_app_with(&[("ADMIN_TOKEN", "")]).await;
    for (method, path) in [
        (Method::GET, "/api/dingtalk/integrations"),
        (Method::PUT, "/api/dingtalk/integrations/acme"),
        (Method::POST, "/api/dingtalk/integrations/acme/test"),
    ] {
        let response = app
            .anonymous(method, path)
            .bearer_auth("")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
        let body = json_of(response).await;
        assert_eq!(error_code(&body), "admin_disabled");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disabled until ADMIN_TOKEN is set"));
    }
    let ready = app.anonymous(Method::GET, "/readyz").send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready = json_of(ready).await;
    assert_eq!(ready["checks"], json!({"nats": "ok", "redis": "ok"}));
    let health = app.anonymous(Method::GET, "/healthz").send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

// --- The integration resource -------------------------------------------------------------

#[tokio::test]
async fn integrations_round_trip_through_put_get_list_and_delete() {
    let app = spawn_app().await;

    let created = put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.headers()["location"],
        "/api/dingtalk/integrations/acme"
    );
    let created = json_of(created).await;
    assert_eq!(created["id"], "acme");
    assert_eq!(created["robot_code"], "dingkey");
    assert_eq!(created["connection_mode"], "http");

    let mut changed = integration_body("dingkey", CLIENT_SECRET);
    changed["id"] = json!("acme");
    changed["preferred_language"] = json!("en");
    let replaced = put_integration(&app, "acme", &changed).await;
    assert_eq!(replaced.status(), StatusCode::OK);
    let replaced = json_of(replaced).await;
    assert_eq!(replaced["preferred_language"], "en");
    assert_eq!(replaced["created_at"], created["created_at"]);

    put_integration(&app, "beta", &integration_body("dingbeta", CLIENT_SECRET)).await;
    let listed = json_of(
        app.admin(Method::GET, "/api/dingtalk/integrations")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let ids: Vec<&str> = listed["integrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "beta"]);

    let read = app
        .admin(Method::GET, "/api/dingtalk/integrations/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(json_of(read).await, replaced);

    let deleted = app
        .admin(Method::DELETE, "/api/dingtalk/integrations/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let gone = app
        .admin(Method::GET, "/api/dingtalk/integrations/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&json_of(gone).await), "unknown_integration");
    let again = app
        .admin(Method::DELETE, "/api/dingtalk/integrations/acme")
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validation_errors_name_every_bad_field_at_once() {
    let app = spawn_app().await;

    let mut body = integration_body("dingkey", CLIENT_SECRET);
    body["callback_aes_key"] = json!("too-short");
    body["preferred_language"] = json!("fr");
    body["qps_limit"] = json!(0);
    body["connection_mode"] = json!("websocket");
    let response = put_integration(&app, "acme", &body).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let error = json_of(response).await;
    assert_eq!(error_code(&error), "validation_failed");
    let fields: BTreeSet<&str> = error["error"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from([
            "callback_aes_key",
            "preferred_language",
            "qps_limit",
            "connection_mode"
        ])
    );
    assert!(!error.to_string().contains("too-short"), "{error}");
    assert!(error.to_string().contains("43 characters"), "{error}");

    let field_of = |error: &Value| error["error"]["fields"][0]["field"].clone();
    let bad_id = json_of(put_integration(&app, "bad.id", &integration_body("k", "s")).await).await;
    assert_eq!(field_of(&bad_id), "id");

    let mut other_id = integration_body("k", "s");
    other_id["id"] = json!("other");
    let response = put_integration(&app, "acme", &other_id).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&json_of(response).await), "id");

    let mut typo = integration_body("k", "s");
    typo["client_secert"] = json!("s");
    let response = put_integration(&app, "acme", &typo).await;
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(field_of(&json_of(response).await), "client_secert");

    let malformed = app
        .admin(Method::PUT, "/api/dingtalk/integrations/acme")
        .header("content-type", "application/json")
        .body("{\"client_id\":")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
    assert_eq!(error_code(&json_of(malformed).await), "malformed_json");

    let mut huge = integration_body("k", "s");
    huge["name"] = json!("x".repeat(ingress::admin::MAX_BODY_BYTES));
    let response = put_integration(&app, "acme", &huge).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&json_of(response).await), "body_too_large");

    // Nothing was stored by any of these.
    let listed = json_of(
        app.admin(Method::GET, "/api/dingtalk/integrations")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed, json!({"integrations": []}));
}

#[tokio::test]
async fn no_answer_ever_contains_a_secret() {
    let (app, _sim) = spawn_app_with_sim().await;
    const ROBOT_TOKEN: &str = "robot-access-token-0123456789";
    const ROBOT_SECRET: &str = "SECrobot-signing-secret-0123";
    let mut answers = Vec::new();
    let mut body = integration_body("dingkey", CLIENT_SECRET);
    body["custom_robots"] = json!([{"access_token": ROBOT_TOKEN, "secret": ROBOT_SECRET}]);
    let put = put_integration(&app, "acme", &body).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    answers.push(put.text().await.unwrap());
    for path in [
        "/api/dingtalk/integrations/acme",
        "/api/dingtalk/integrations",
        "/openapi.json",
    ] {
        let response = app.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        answers.push(response.text().await.unwrap());
    }
    let (status, report) = preflight(&app, "acme").await;
    assert_eq!(status, StatusCode::OK);
    answers.push(report.to_string());
    for answer in &answers {
        for secret in [
            CLIENT_SECRET,
            CALLBACK_TOKEN,
            AES_KEY,
            ADMIN_TOKEN,
            ROBOT_TOKEN,
            ROBOT_SECRET,
        ] {
            assert!(!answer.contains(secret), "{secret} leaked in {answer}");
        }
    }
    let read: Value = serde_json::from_str(&answers[1]).unwrap();
    assert_eq!(read["client_secret"], "app-***");
    assert_eq!(read["callback_aes_key"], "abcd***");
    assert_eq!(
        read["custom_robots"],
        json!([{"access_token": "robo***", "secret": "SECr***"}])
    );
}

// --- Trigger bindings ---------------------------------------------------------------------

#[tokio::test]
async fn a_trigger_binding_is_put_read_and_deleted() {
    let app = spawn_app().await;
    put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;
    let trigger = "/api/dingtalk/integrations/acme/trigger";

    let none = app.admin(Method::GET, trigger).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&json_of(none).await), "no_trigger");

    let bound = app
        .admin(Method::PUT, trigger)
        .json(&json!({"xpert_id": "xpert-42"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), StatusCode::OK);
    let expected = json!({"integration_id": "acme", "xpert_id": "xpert-42"});
    assert_eq!(json_of(bound).await, expected);
    let read = app.admin(Method::GET, trigger).send().await.unwrap();
    assert_eq!(json_of(read).await, expected);

    let bad = app
        .admin(Method::PUT, trigger)
        .json(&json!({"xpert_id": "has space"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        json_of(bad).await["error"]["fields"][0]["field"],
        "xpert_id"
    );

    let deleted = app.admin(Method::DELETE, trigger).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    let after = app.admin(Method::GET, trigger).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::NOT_FOUND);
    let twice = app.admin(Method::DELETE, trigger).send().await.unwrap();
    assert_eq!(twice.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&json_of(twice).await), "no_trigger");

    // Deleting the integration takes its binding along.
    app.admin(Method::PUT, trigger)
        .json(&json!({"xpert_id": "xpert-42"}))
        .send()
        .await
        .unwrap();
    app.admin(Method::DELETE, "/api/dingtalk/integrations/acme")
        .send()
        .await
        .unwrap();
    put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;
    let fresh = app.admin(Method::GET, trigger).send().await.unwrap();
    assert_eq!(fresh.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn unknown_integrations_are_404_on_every_route() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/api/dingtalk/integrations/ghost"),
        (Method::DELETE, "/api/dingtalk/integrations/ghost"),
        (Method::POST, "/api/dingtalk/integrations/ghost/test"),
        (Method::GET, "/api/dingtalk/integrations/ghost/trigger"),
        (Method::DELETE, "/api/dingtalk/integrations/ghost/trigger"),
        (Method::GET, "/api/dingtalk/integrations/not.an.id"),
    ] {
        let response = app.admin(method.clone(), path).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
        assert_eq!(error_code(&json_of(response).await), "unknown_integration");
    }
    let put = app
        .admin(Method::PUT, "/api/dingtalk/integrations/ghost/trigger")
        .json(&json!({"xpert_id": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::NOT_FOUND);
    let nowhere = app.admin(Method::GET, "/api/nowhere").send().await.unwrap();
    assert_eq!(nowhere.status(), StatusCode::NOT_FOUND);
    assert_eq!(error_code(&json_of(nowhere).await), "not_found");
}

// --- Preflight ----------------------------------------------------------------------------

#[tokio::test]
async fn preflight_without_public_base_url_is_a_clear_409() {
    let app = spawn_app_with(&[("PUBLIC_BASE_URL", "")]).await;
    put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;
    let (status, body) = preflight(&app, "acme").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(error_code(&body), "public_base_url_unset");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("set PUBLIC_BASE_URL"));
}

#[tokio::test]
async fn preflight_passes_for_a_well_configured_app_and_lists_console_settings() {
    let (app, sim) = spawn_app_with_sim().await;
    put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;

    let (status, report) = preflight(&app, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], true, "{report:#}");
    // The contact check costs one member of the root department, nothing more.
    let listed = sim.state().calls(&CallFilter::api(Api::UserListSimple));
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].body["dept_id"], 1);
    assert_eq!(listed[0].body["size"], 1);
    let webhook = format!("{PUBLIC_BASE_URL}/api/dingtalk/webhook/acme");
    assert_eq!(report["webhook_url"], webhook);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "credentials",
            "contact_permission",
            "robot_code",
            "callback_crypto",
            "webhook_url"
        ]
    );
    for name in names {
        assert_eq!(check(&report, name)["status"], "ok", "{name}");
    }
    let console = &report["console"];
    assert_eq!(console["message_receiving_url"], webhook);
    assert_eq!(console["event_subscription_url"], webhook);
    assert_eq!(console["card_callback_url"], format!("{webhook}/card"));
    let scopes: Vec<&str> = console["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["scope"].as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"qyapi_get_department_member"));
}

#[tokio::test]
async fn preflight_explains_refused_credentials_without_a_stack_of_json() {
    let (app, _sim) = spawn_app_with_sim().await;
    put_integration(&app, "acme", &integration_body("dingkey", "a-wrong-secret")).await;

    let (status, report) = preflight(&app, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], false);
    let credentials = check(&report, "credentials");
    assert_eq!(credentials["status"], "failed");
    assert_eq!(
        credentials["message"],
        "DingTalk refused client_id \"dingkey\" with this client_secret (HTTP 400, code \
         invalidClientIdOrSecret: invalid appKey or appSecret)."
    );
    assert!(credentials["fix"].as_str().unwrap().contains("AppSecret"));
    assert_eq!(check(&report, "contact_permission")["status"], "skipped");
    assert_eq!(check(&report, "callback_crypto")["status"], "ok");
    assert!(!report.to_string().contains("a-wrong-secret"));
}

#[tokio::test]
async fn preflight_says_to_grant_the_contact_permission_on_errcode_60011() {
    let (app, sim) = spawn_app_with_sim().await;
    sim.state()
        .add_fault(
            Fault::once(FaultKind::Permission60011)
                .on(Api::UserListSimple)
                .times(FaultCount::Always),
        )
        .expect("the fault is accepted");
    put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;

    let (status, report) = preflight(&app, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], false);
    assert_eq!(check(&report, "credentials")["status"], "ok");
    let contact = check(&report, "contact_permission");
    assert_eq!(contact["status"], "failed");
    assert!(contact["message"].as_str().unwrap().contains("60011"));
    assert!(contact["fix"]
        .as_str()
        .unwrap()
        .contains("grant qyapi_get_department_member"));
}

#[tokio::test]
async fn preflight_reports_an_unreachable_dingtalk_and_skips_what_does_not_apply() {
    // The default test app points DingTalk at the discard port: nothing listens there.
    let app = spawn_app().await;
    let mut stream = integration_body("dingkey", CLIENT_SECRET);
    stream["connection_mode"] = json!("stream");
    put_integration(&app, "acme", &stream).await;

    let (status, report) = preflight(&app, "acme").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["ok"], false);
    let credentials = check(&report, "credentials");
    assert_eq!(credentials["status"], "failed");
    let message = credentials["message"].as_str().unwrap();
    assert!(
        message.starts_with("Could not reach DingTalk at http://127.0.0.1:9"),
        "{message}"
    );
    assert!(credentials["fix"]
        .as_str()
        .unwrap()
        .contains("DINGTALK_API_URL"));
    assert_eq!(check(&report, "callback_crypto")["status"], "skipped");
    assert_eq!(check(&report, "robot_code")["status"], "ok");
    assert!(!report.to_string().contains(CLIENT_SECRET));
}

// --- OpenAPI ------------------------------------------------------------------------------

/// Every route in the served document answers on its listener with its method (neither 404
/// nor 405), other methods on those paths are 405, and the document lists exactly the route
/// table the admin router is built from.
#[tokio::test]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let app = spawn_app().await;
    put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;
    app.admin(Method::PUT, "/api/dingtalk/integrations/acme/trigger")
        .json(&json!({"xpert_id": "xpert-1"}))
        .send()
        .await
        .unwrap();

    let doc = json_of(
        app.anonymous(Method::GET, "/openapi.json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(doc["openapi"], "3.1.0");
    let methods = ["get", "put", "post", "delete"];
    let mut documented = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let listener = item["x-listener"].as_str().unwrap().to_owned();
        for method in methods {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone(), listener.clone()));
            }
        }
    }

    let table: BTreeSet<(String, String)> = ingress::admin::routes::ROUTES
        .iter()
        .map(|r| (r.method.as_str().to_owned(), r.path.to_owned()))
        .collect();
    let listed: BTreeSet<(String, String)> = documented
        .iter()
        .map(|(m, p, _)| (m.clone(), p.clone()))
        .collect();
    assert_eq!(listed, table);

    // Deletes last (the binding before the integration), so earlier calls find their target.
    documented.sort_by_key(|(method, path, _)| (method == "DELETE", std::cmp::Reverse(path.len())));
    for (method, path, listener) in &documented {
        let concrete = path
            .replace("{integration_id}", "acme")
            .replace("{id}", "acme");
        let base = if listener == "public" {
            &app.public_url
        } else {
            &app.admin_url
        };
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = app
            .http
            .request(method.clone(), format!("{base}{concrete}"))
            .bearer_auth(ADMIN_TOKEN);
        if method == Method::PUT || method == Method::POST {
            let body = if concrete.ends_with("/trigger") {
                json!({"xpert_id": "xpert-1"})
            } else if listener == "public" {
                json!({"msgtype": "text"})
            } else {
                integration_body("dingkey", CLIENT_SECRET)
            };
            request = request.json(&body);
        }
        let status = request.send().await.unwrap().status();
        assert!(
            status != StatusCode::NOT_FOUND && status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} on the {listener} listener answered {status}"
        );
    }

    // Methods the document does not list for a path are not served there.
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{integration_id}", "acme")
            .replace("{id}", "acme");
        let base = if item["x-listener"] == "public" {
            &app.public_url
        } else {
            &app.admin_url
        };
        for method in methods.iter().filter(|m| item.get(**m).is_none()) {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let status = app
                .http
                .request(method.clone(), format!("{base}{concrete}"))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
}

// --- Metrics and shutdown -----------------------------------------------------------------

#[tokio::test]
async fn admin_requests_are_counted_by_route_and_status() {
    let app = spawn_app().await;
    // The first scrape installs the process-wide recorder if no test did yet.
    app.anonymous(Method::GET, "/metrics").send().await.unwrap();
    app.anonymous(Method::GET, "/api/dingtalk/integrations")
        .send()
        .await
        .unwrap();
    app.admin(Method::GET, "/api/dingtalk/integrations/ghost")
        .send()
        .await
        .unwrap();
    let metrics = app
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("dingtalk_gateway_ingress_admin_requests_total"))
        .collect();
    let has = |route: &str, status: &str| {
        lines.iter().any(|l| {
            l.contains(&format!("route=\"{route}\"")) && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(has("/api/dingtalk/integrations", "401"), "{lines:#?}");
    assert!(has("/api/dingtalk/integrations/{id}", "404"), "{lines:#?}");
    assert!(!metrics.contains("ghost"), "raw ids must not become labels");
}

#[tokio::test]
async fn stopping_the_ingress_closes_the_admin_listener() {
    let mut app = spawn_app().await;
    let admin = app.admin_url.clone();
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the listeners drain");
    let refused = app.http.get(format!("{admin}/healthz")).send().await;
    assert!(refused.is_err(), "the admin listener still answers");
}

// --- reencrypt-secrets ---------------------------------------------------------------------

const SECRETS_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

async fn reencrypt(redis_url: &str, secrets_key: &str) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ingress"))
        .arg("reencrypt-secrets")
        .env_clear()
        .env("REDIS_URL", redis_url)
        .env("SECRETS_KEY", secrets_key)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("the ingress binary runs")
}

#[tokio::test]
async fn reencrypt_secrets_reseals_stored_integrations_and_prints_the_counts() {
    // Stored without SECRETS_KEY, i.e. in plain text, then encryption is turned on.
    let app = spawn_app().await;
    put_integration(&app, "acme", &integration_body("dingkey", CLIENT_SECRET)).await;
    put_integration(&app, "beta", &integration_body("dingbeta", CLIENT_SECRET)).await;
    let redis_url = app.redis.url();

    let first = reencrypt(&redis_url, SECRETS_KEY).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(first.status.success(), "{first:?}");
    assert!(
        stdout.starts_with("re-encrypted 2 integration(s) with key "),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("; 0 already used it"),
        "{stdout}"
    );

    let second = reencrypt(&redis_url, SECRETS_KEY).await;
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(second.status.success(), "{second:?}");
    assert!(
        stdout.starts_with("re-encrypted 0 integration(s)"),
        "{stdout}"
    );
    assert!(
        stdout.trim_end().ends_with("; 2 already used it"),
        "{stdout}"
    );

    let no_key = reencrypt(&redis_url, "").await;
    assert_eq!(no_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&no_key.stderr).contains("SECRETS_KEY is not set"));

    let no_redis = reencrypt("redis://127.0.0.1:9", SECRETS_KEY).await;
    assert_eq!(no_redis.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_redis.stderr).contains("cannot open the registry"));
}
