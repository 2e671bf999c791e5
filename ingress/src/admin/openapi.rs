//! The OpenAPI 3.1 document of both listeners, served at `GET /openapi.json` on the admin one.
//!
//! Built by hand from the route table ([`super::routes::ROUTES`]) that also builds the admin
//! router, so routes and document cannot drift. The schemas are written here; unit tests
//! check them against the Rust types (what the registry accepts, what the API serializes).
//! A derive-based generator was not used because the body types live in `common` and would
//! need its cooperation, while the table gives the one thing that matters most: a document
//! that lists exactly what is served.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Map, Value};

use super::integrations::{example_spec, SPEC_FIELDS};
use super::routes::{Body, Listener, Route, ROUTES};
use super::AdminState;

/// `GET /openapi.json`.
pub async fn serve(State(state): State<AdminState>) -> Json<Value> {
    Json(document(state.public_base_url.as_deref()))
}

/// The whole document. `public_base_url` (when set) is the server of the public routes.
pub fn document(public_base_url: Option<&str>) -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let item = paths
            .entry(route.path)
            .or_insert_with(|| path_item(route, public_base_url));
        item[route.method.lowercase()] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "dingtalk-gateway ingress",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The admin API (ADMIN_ADDR; `/api/` needs `Authorization: Bearer \
                $ADMIN_TOKEN`), the ops routes, and the public routes DingTalk calls \
                (INGRESS_ADDR). Each path item says its listener in `x-listener`.",
        },
        "servers": [{"url": "/", "description": "The admin listener (ADMIN_ADDR)."}],
        "tags": [
            {"name": "integrations", "description": "DingTalk apps connected to the gateway."},
            {"name": "triggers", "description": "Which expert answers for an integration."},
            {"name": "ops", "description": "Probes, metrics and this document."},
            {"name": "dingtalk", "description": "What DingTalk calls, on the public listener."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "adminToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The value of ADMIN_TOKEN. With ADMIN_TOKEN unset the admin \
                        API answers 403 to everything.",
                },
            },
            "schemas": schemas(),
        },
    })
}

/// A path item with its listener, public server and path parameters.
fn path_item(route: &Route, public_base_url: Option<&str>) -> Value {
    let mut item = json!({ "x-listener": route.listener().as_str() });
    if route.listener() == Listener::Public {
        item["servers"] = json!([match public_base_url {
            Some(base) =>
                json!({"url": base, "description": "The public listener (INGRESS_ADDR), as PUBLIC_BASE_URL."}),
            None => json!({
                "url": "https://{host}",
                "description": "The public listener (INGRESS_ADDR); PUBLIC_BASE_URL is not set.",
                "variables": {"host": {"default": "bot.example.com"}},
            }),
        }]);
    }
    let parameters: Vec<Value> = path_parameters(route.path)
        .map(|name| {
            json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": "The integration id: 1 to 64 ASCII letters, digits, '_' or '-'.",
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"},
            })
        })
        .collect();
    if !parameters.is_empty() {
        item["parameters"] = json!(parameters);
    }
    item
}

/// The `{name}` segments of a path template.
pub fn path_parameters(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
}

fn operation(route: &Route) -> Value {
    let mut op = json!({
        "operationId": route.operation_id,
        "tags": [route.tag],
        "summary": route.summary,
    });
    if !route.description.is_empty() {
        op["description"] = json!(route.description);
    }
    if let Some(body) = route.request {
        op["requestBody"] = json!({"required": true, "content": content(body)});
    }
    let mut responses = Map::new();
    for answer in route.answers {
        let mut response = json!({"description": answer.description});
        if let Some(body) = answer.body {
            response["content"] = content(body);
        }
        responses.insert(answer.status.to_string(), response);
    }
    if route.requires_token() {
        op["security"] = json!([{"adminToken": []}]);
        responses.insert(
            "401".into(),
            json!({"description": "No bearer token, or not ADMIN_TOKEN.", "content": content(Body::Json("Error"))}),
        );
        responses.insert(
            "403".into(),
            json!({"description": "ADMIN_TOKEN is unset: the admin API is disabled.", "content": content(Body::Json("Error"))}),
        );
    }
    op["responses"] = Value::Object(responses);
    op
}

fn content(body: Body) -> Value {
    match body {
        Body::Json(schema) => json!({
            "application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}
        }),
        Body::Text => json!({"text/plain": {"schema": {"type": "string"}}}),
    }
}

/// What each integration field is, for [`SPEC_FIELDS`].
fn spec_property(field: &str) -> Value {
    match field {
        "id" => {
            json!({"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$", "description": "Optional: the path's id wins; if given it must be the same."})
        }
        "name" => json!({"type": "string", "maxLength": 128, "description": "Display name."}),
        "client_id" => {
            json!({"type": "string", "description": "The app's AppKey (client id). Required."})
        }
        "client_secret" => {
            json!({"type": "string", "writeOnly": true, "description": "The app's AppSecret. Required; masked when read."})
        }
        "http_callback_enabled" => {
            json!({"type": "boolean", "default": true, "description": "Whether DingTalk calls the public listener for this app."})
        }
        "callback_token" => {
            json!({"type": "string", "writeOnly": true, "description": "The event subscription Token. Required in HTTP mode with callbacks enabled."})
        }
        "callback_aes_key" => {
            json!({"type": "string", "minLength": 43, "maxLength": 43, "pattern": "^[A-Za-z0-9+/]{43}$", "writeOnly": true, "description": "The event subscription aes_key, 43 characters. Required in HTTP mode with callbacks enabled."})
        }
        "robot_code" => {
            json!({"type": "string", "description": "The robot code; defaults to client_id."})
        }
        "xpert_id" => {
            json!({"type": "string", "maxLength": 128, "description": "Fallback expert when no trigger binding exists."})
        }
        "preferred_language" => {
            json!({"type": "string", "enum": ["zh-Hans", "en"], "default": "zh-Hans"})
        }
        "connection_mode" => {
            json!({"type": "string", "enum": ["http", "stream"], "default": "http"})
        }
        "qps_limit" => {
            json!({"type": "integer", "minimum": 1, "maximum": 10000, "default": 20, "description": "DingTalk API budget per API, requests per second."})
        }
        "custom_robots" => json!({
            "type": "array",
            "maxItems": 100,
            "description": "Custom group robots secured with a signature (加签): webhook recipients with this access_token are signed with its secret. Robots not listed are called unsigned. Both values are masked when read.",
            "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["access_token", "secret"],
                "properties": {
                    "access_token": {"type": "string", "writeOnly": true, "description": "The access_token of the robot's webhook URL."},
                    "secret": {"type": "string", "writeOnly": true, "description": "The robot's signing secret (SEC…)."},
                },
            },
        }),
        _ => json!({}),
    }
}

fn schemas() -> Value {
    let spec_properties: Map<String, Value> = SPEC_FIELDS
        .iter()
        .map(|field| ((*field).to_owned(), spec_property(field)))
        .collect();
    let masked = "The first 4 characters of secrets of 16 or more characters, then `***`; \
                  `***` for shorter ones.";
    json!({
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {
                    "code": {"type": "string", "description": "Stable reason, e.g. unauthorized, validation_failed, unknown_integration."},
                    "message": {"type": "string"},
                    "fields": {"type": "array", "items": {
                        "type": "object",
                        "required": ["field", "message"],
                        "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                    }},
                },
            }},
        },
        "IntegrationSpec": {
            "type": "object",
            "additionalProperties": false,
            "properties": spec_properties,
            "example": example_spec(),
        },
        "Integration": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "name": {"type": ["string", "null"]},
                "client_id": {"type": "string"},
                "client_secret": {"type": "string", "description": masked},
                "http_callback_enabled": {"type": "boolean"},
                "callback_token": {"type": ["string", "null"], "description": masked},
                "callback_aes_key": {"type": ["string", "null"], "description": masked},
                "robot_code": {"type": "string", "description": "The effective robot code."},
                "xpert_id": {"type": ["string", "null"]},
                "preferred_language": {"type": "string", "enum": ["zh-Hans", "en"]},
                "connection_mode": {"type": "string", "enum": ["http", "stream"]},
                "qps_limit": {"type": "integer"},
                "custom_robots": {"type": "array", "items": {
                    "type": "object",
                    "properties": {
                        "access_token": {"type": "string", "description": masked},
                        "secret": {"type": "string", "description": masked},
                    },
                }},
                "created_at": {"type": "string", "format": "date-time"},
                "updated_at": {"type": "string", "format": "date-time"},
            },
        },
        "IntegrationList": {
            "type": "object",
            "properties": {"integrations": {"type": "array", "items": {"$ref": "#/components/schemas/Integration"}}},
        },
        "TriggerRequest": {
            "type": "object",
            "additionalProperties": false,
            "required": ["xpert_id"],
            "properties": {"xpert_id": {"type": "string", "maxLength": 128, "description": "The expert to bind."}},
        },
        "TriggerBinding": {
            "type": "object",
            "properties": {"integration_id": {"type": "string"}, "xpert_id": {"type": "string"}},
        },
        "StreamStatus": {
            "type": "object",
            "properties": {
                "integration_id": {"type": "string"},
                "connection_mode": {"type": "string", "enum": ["http", "stream"]},
                "connections": {"type": "array", "items": {"$ref": "#/components/schemas/StreamConnection"}},
                "last_error": {"description": "The newest error of any slot, or null.", "type": ["object", "null"]},
            },
        },
        "StreamConnection": {
            "type": "object",
            "properties": {
                "slot": {"type": "integer"},
                "replica": {"type": ["string", "null"], "description": "STREAM_REPLICA_ID of the holder."},
                "state": {"type": "string", "enum": ["connected", "connecting", "unassigned"]},
                "connected_at": {"type": ["string", "null"]},
                "age_s": {"type": ["integer", "null"]},
                "last_frame_at": {"type": ["string", "null"]},
                "last_error": {"type": ["string", "null"]},
                "last_error_at": {"type": ["string", "null"]},
                "sockets": {"type": "integer", "description": "Sockets the slot holds: 1, or 2 while one replaces another."},
            },
        },
        "Preflight": {
            "type": "object",
            "properties": {
                "ok": {"type": "boolean", "description": "True when no check failed."},
                "integration_id": {"type": "string"},
                "webhook_url": {"type": "string", "description": "{PUBLIC_BASE_URL}/api/dingtalk/webhook/{id}"},
                "checks": {"type": "array", "items": {"$ref": "#/components/schemas/PreflightCheck"}},
                "console": {"$ref": "#/components/schemas/ConsoleSettings"},
            },
        },
        "PreflightCheck": {
            "type": "object",
            "required": ["name", "status", "message"],
            "properties": {
                "name": {"type": "string", "enum": ["credentials", "contact_permission", "robot_code", "callback_crypto", "webhook_url"]},
                "status": {"type": "string", "enum": ["ok", "failed", "skipped"]},
                "message": {"type": "string"},
                "fix": {"type": "string", "description": "What to do; present on failed and some skipped checks."},
            },
        },
        "ConsoleSettings": {
            "type": "object",
            "properties": {
                "connection_mode": {"type": "string", "enum": ["http", "stream"]},
                "message_receiving_url": {"type": "string"},
                "event_subscription_url": {"type": "string"},
                "card_callback_url": {"type": "string"},
                "permissions": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"scope": {"type": "string"}, "why": {"type": "string"}},
                }},
                "steps": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Readiness": {
            "type": "object",
            "properties": {
                "ready": {"type": "boolean"},
                "checks": {"type": "object", "additionalProperties": {"type": "string"}, "description": "\"ok\" or the reason, per dependency (nats, redis)."},
            },
        },
        "Callback": {
            "description": "What DingTalk sends: a robot message, an encrypted event envelope `{\"encrypt\": …}`, or a card action.",
            "type": "object",
        },
        "CallbackAnswer": {
            "description": "`{\"ok\":true,\"id\":…}` for robot messages and card actions, the encrypted `success` (`msg_signature`, `timeStamp`, `nonce`, `encrypt`) for events.",
            "type": "object",
        },
        "OpenApi": {"type": "object", "description": "An OpenAPI 3.1 document."},
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use common::registry::IntegrationSpec;
    use time::OffsetDateTime;

    use super::super::preflight;
    use super::*;

    fn keys(value: &Value) -> BTreeSet<String> {
        value.as_object().unwrap().keys().cloned().collect()
    }

    #[test]
    fn the_document_lists_exactly_the_route_table() {
        let doc = document(None);
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                if item.get(method).is_some() {
                    documented.insert((method.to_owned(), path.clone()));
                }
            }
        }
        let table: BTreeSet<_> = ROUTES
            .iter()
            .map(|r| (r.method.lowercase().to_owned(), r.path.to_owned()))
            .collect();
        assert_eq!(documented, table);
    }

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document(Some("https://bot.example.com"));
        let text = doc.to_string();
        let schemas = keys(&doc["components"]["schemas"]);
        for reference in text.split("#/components/schemas/").skip(1) {
            let name: String = reference
                .chars()
                .take_while(|c| c.is_alphanumeric())
                .collect();
            assert!(schemas.contains(&name), "dangling $ref {name}");
        }
    }

    #[test]
    fn path_parameters_are_declared() {
        let doc = document(None);
        let item = &doc["paths"]["/api/dingtalk/integrations/{id}/test"];
        assert_eq!(item["parameters"][0]["name"], "id");
        assert_eq!(item["x-listener"], "admin");
        let public = &doc["paths"]["/api/dingtalk/webhook/{integration_id}"];
        assert_eq!(public["x-listener"], "public");
        assert_eq!(public["parameters"][0]["name"], "integration_id");
        assert!(public["post"].get("security").is_none());
        assert_eq!(
            doc["paths"]["/api/dingtalk/integrations"]["get"]["security"][0]["adminToken"],
            json!([])
        );
    }

    #[test]
    fn the_spec_schema_names_exactly_the_accepted_fields() {
        let doc = document(None);
        let properties = &doc["components"]["schemas"]["IntegrationSpec"]["properties"];
        let documented = keys(properties);
        let accepted: BTreeSet<String> = SPEC_FIELDS.iter().map(|f| (*f).to_owned()).collect();
        assert_eq!(documented, accepted);
        for field in SPEC_FIELDS {
            assert_ne!(properties[*field], json!({}), "{field} has no schema");
        }
    }

    #[test]
    fn response_schemas_match_what_is_serialized() {
        let doc = document(None);
        let schema = |name: &str| keys(&doc["components"]["schemas"][name]["properties"]);
        let integration = IntegrationSpec {
            id: "acme".into(),
            client_id: "k".into(),
            client_secret: "s".into(),
            callback_token: Some("t".into()),
            callback_aes_key: Some("abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".into()),
            ..IntegrationSpec::default()
        }
        .into_integration(OffsetDateTime::UNIX_EPOCH)
        .unwrap();
        assert_eq!(
            keys(&serde_json::to_value(integration.masked()).unwrap()),
            schema("Integration")
        );
        let report = preflight::report("https://b.example", &integration, Vec::new());
        let report = serde_json::to_value(report).unwrap();
        assert_eq!(keys(&report), schema("Preflight"));
        assert_eq!(keys(&report["console"]), schema("ConsoleSettings"));
    }
}
