//! Media upload (PROTOCOL §4.8) and robot file download (§2.2).

use dingtalk_sim::Api;
use reqwest::multipart::{Form, Part};
use serde_json::json;

use crate::helpers::{config, TestSim, APP_KEY};

fn form(field: &str, bytes: Vec<u8>) -> Form {
    Form::new().part(field.to_owned(), Part::bytes(bytes).file_name("report.pdf"))
}

async fn upload(
    t: &TestSim,
    token: &str,
    media_type: Option<&str>,
    form: Form,
) -> crate::helpers::Answer {
    let mut query = vec![("access_token", token.to_owned())];
    if let Some(media_type) = media_type {
        query.push(("type", media_type.to_owned()));
    }
    t.send(
        t.http
            .post(t.url(Api::MediaUpload.path()))
            .query(&query)
            .multipart(form),
    )
    .await
}

#[tokio::test]
async fn uploaded_media_gets_a_media_id_and_can_be_fetched_back() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    let answer = upload(
        &t,
        &token,
        Some("file"),
        form("media", b"%PDF-1.4".to_vec()),
    )
    .await;
    let body = answer.assert_old_ok();
    let media_id = body["media_id"].as_str().unwrap();
    assert!(media_id.starts_with('@'));
    assert_eq!(body["type"], "file");
    let file = t
        .http
        .get(t.url(&format!("/_sim/files/{media_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), 200);
    assert_eq!(file.bytes().await.unwrap().as_ref(), b"%PDF-1.4");
    assert_eq!(t.accepted(Api::MediaUpload)[0].body["size"], 8);
}

#[tokio::test]
async fn upload_without_the_media_field_is_refused() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    upload(&t, &token, Some("file"), form("file", b"x".to_vec()))
        .await
        .assert_errcode(40035);
    t.assert_only_refused(Api::MediaUpload, 1, "media is mandatory");
}

#[tokio::test]
async fn upload_without_or_with_an_unknown_type_is_refused() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    upload(&t, &token, None, form("media", b"x".to_vec()))
        .await
        .assert_errcode(40035);
    upload(&t, &token, Some("gif"), form("media", b"x".to_vec()))
        .await
        .assert_errcode(40035);
    t.assert_only_refused(Api::MediaUpload, 2, "allowed: image, file, voice, video");
}

#[tokio::test]
async fn upload_that_is_not_multipart_is_refused() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    let answer = t
        .send(
            t.http
                .post(t.url(Api::MediaUpload.path()))
                .query(&[("access_token", token.as_str()), ("type", "file")])
                .json(&json!({"media": "x"})),
        )
        .await;
    answer.assert_errcode(40035);
    t.assert_only_refused(Api::MediaUpload, 1, "multipart/form-data");
}

#[tokio::test]
async fn upload_over_the_size_limit_is_refused() {
    let mut config = config();
    config.limits.max_media_bytes = 1024;
    let t = TestSim::start_with(config).await;
    let token = t.old_token().await;
    upload(&t, &token, Some("image"), form("media", vec![7; 1025]))
        .await
        .assert_errcode(40035);
    t.assert_only_refused(Api::MediaUpload, 1, "limit");
}

#[tokio::test]
async fn upload_without_a_token_is_40014() {
    let t = TestSim::start().await;
    let answer = t
        .send(
            t.http
                .post(t.url(Api::MediaUpload.path()))
                .query(&[("type", "file")])
                .multipart(form("media", b"x".to_vec())),
        )
        .await;
    answer.assert_errcode(40014);
}

#[tokio::test]
async fn robot_message_file_download_code_resolves_to_a_download_url() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    let code = t
        .sim
        .state()
        .add_download("photo.png", bytes::Bytes::from_static(b"PNGDATA"));
    let answer = t
        .post_new(
            Api::MessageFileDownload.path(),
            &token,
            json!({"downloadCode": code, "robotCode": APP_KEY}),
        )
        .await;
    let url = answer.assert_ok()["downloadUrl"]
        .as_str()
        .unwrap()
        .to_owned();
    let bytes = t.http.get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.as_ref(), b"PNGDATA");
}

#[tokio::test]
async fn unknown_download_code_is_refused() {
    let t = TestSim::start().await;
    let token = t.new_token().await;
    t.post_new(
        Api::MessageFileDownload.path(),
        &token,
        json!({"downloadCode": "nope", "robotCode": APP_KEY}),
    )
    .await
    .assert_new_error(400, "resource.not.found");
    t.post_new(
        Api::MessageFileDownload.path(),
        &token,
        json!({"robotCode": APP_KEY}),
    )
    .await
    .assert_new_error(400, "MissingdownloadCode");
}

#[tokio::test]
async fn an_empty_file_or_a_voice_over_2_mb_is_refused() {
    let t = TestSim::start().await;
    let token = t.old_token().await;
    upload(&t, &token, Some("file"), form("media", Vec::new()))
        .await
        .assert_errcode(40035);
    upload(
        &t,
        &token,
        Some("voice"),
        form("media", vec![1; 2 * 1024 * 1024 + 1]),
    )
    .await
    .assert_errcode(40035);
    t.assert_only_refused(Api::MediaUpload, 2, "voice");
    upload(&t, &token, Some("voice"), form("media", vec![1; 1024]))
        .await
        .assert_old_ok();
}
