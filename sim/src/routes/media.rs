//! Media upload (`POST /media/upload`, PROTOCOL §4.8) and the plain download of stored files
//! (`GET /_sim/files/{media_id}`, the `downloadUrl` the simulator hands out).

use std::collections::HashMap;

use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::json;

use crate::api::Api;
use crate::error::ApiError;
use crate::gate::{serve_call, Auth};
use crate::ids;
use crate::media::MediaFile;
use crate::state::SimState;

/// Voice files are smaller than the others at DingTalk (2 MB).
const MAX_VOICE_BYTES: usize = 2 * 1024 * 1024;

/// Multipart framing allowance on top of the largest file.
const FRAMING_BYTES: usize = 64 * 1024;

pub(super) fn routes(max_upload_bytes: usize) -> Router<SimState> {
    Router::new()
        .route(
            Api::MediaUpload.path(),
            post(upload).layer(DefaultBodyLimit::max(max_upload_bytes + FRAMING_BYTES)),
        )
        .route("/_sim/files/{media_id}", get(download))
}

/// The `media` part of an upload.
struct Upload {
    file_name: String,
    bytes: Bytes,
}

async fn upload(
    State(state): State<SimState>,
    Query(query): Query<HashMap<String, String>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    let upload = read_media_part(multipart).await;
    let mut record = super::recordable_query(&query);
    if let (Ok(upload), Some(fields)) = (&upload, record.as_object_mut()) {
        fields.insert("fileName".to_owned(), json!(upload.file_name));
        fields.insert("size".to_owned(), json!(upload.bytes.len()));
    }
    serve_call(
        &state,
        Api::MediaUpload,
        Auth::OldToken(super::old_token(&query)),
        record,
        |inner, ctx| {
            let media_type = query
                .get("type")
                .filter(|t| !t.is_empty())
                .ok_or_else(|| ApiError::missing("type"))?;
            let limit = match media_type.as_str() {
                "image" | "file" | "video" => inner.limits.max_media_bytes,
                "voice" => MAX_VOICE_BYTES.min(inner.limits.max_media_bytes),
                other => {
                    return Err(ApiError::invalid(
                        "type",
                        format!("{other:?} is not allowed; allowed: image, file, voice, video"),
                    ))
                }
            };
            let upload = upload?;
            if upload.bytes.len() > limit {
                return Err(ApiError::invalid(
                    "media",
                    format!(
                        "{} bytes is over the {limit}-byte limit for {media_type}",
                        upload.bytes.len()
                    ),
                ));
            }
            let media_id = ids::media_id();
            inner.media.put(MediaFile {
                media_id: media_id.clone(),
                media_type: media_type.clone(),
                file_name: upload.file_name,
                size: upload.bytes.len(),
                bytes: upload.bytes,
            });
            Ok(json!({ "media_id": media_id, "type": media_type, "created_at": ctx.now_ms }))
        },
    )
    .await
}

/// Reads the multipart body's `media` field.
async fn read_media_part(
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Upload, ApiError> {
    let mut multipart = multipart.map_err(|err| {
        ApiError::invalid(
            "media",
            format!("the body must be multipart/form-data: {err}"),
        )
    })?;
    let unreadable = |err: axum::extract::multipart::MultipartError| {
        ApiError::invalid("media", format!("the multipart body cannot be read: {err}"))
    };
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        if field.name() == Some("media") {
            let file_name = field.file_name().unwrap_or("upload").to_owned();
            let bytes = field.bytes().await.map_err(unreadable)?;
            if bytes.is_empty() {
                return Err(ApiError::invalid("media", "the file is empty"));
            }
            return Ok(Upload { file_name, bytes });
        }
    }
    Err(ApiError::missing("media"))
}

async fn download(State(state): State<SimState>, Path(media_id): Path<String>) -> Response {
    match state.media(&media_id) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"{}\"",
                        file.file_name.replace('"', "")
                    ),
                ),
            ],
            file.bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}
