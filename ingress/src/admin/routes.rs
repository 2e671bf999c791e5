//! The one table of every HTTP route the ingress serves, on both listeners.
//!
//! The admin router is built from it ([`admin_router`]) and the OpenAPI document is generated
//! from it ([`super::openapi::document`]), so the document cannot list a route the admin
//! listener does not serve, nor miss one it does. Routes served by other routers (the public
//! webhook routes, the ops routes) are listed here too; the integration tests call every
//! listed route on its listener to prove those are served.

use axum::middleware;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;

use common::secret::Secret;

use super::{auth, integrations, openapi, AdminState};

/// An HTTP method the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// GET.
    Get,
    /// PUT.
    Put,
    /// POST.
    Post,
    /// DELETE.
    Delete,
}

impl Method {
    /// Lower-case name, as OpenAPI path items spell it.
    pub fn lowercase(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Put => "put",
            Self::Post => "post",
            Self::Delete => "delete",
        }
    }

    /// The name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
            Self::Delete => "DELETE",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Self::Get => MethodFilter::GET,
            Self::Put => MethodFilter::PUT,
            Self::Post => MethodFilter::POST,
            Self::Delete => MethodFilter::DELETE,
        }
    }
}

/// Which listener serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// `ADMIN_ADDR`: keep it private.
    Admin,
    /// `INGRESS_ADDR`: what DingTalk calls.
    Public,
}

impl Listener {
    /// The name used in the document's `x-listener` extension.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Public => "public",
        }
    }
}

/// Who answers a route.
#[derive(Clone, Copy)]
pub enum Serve {
    /// A handler of the admin router, given the method filter to mount it with.
    Admin(fn(MethodFilter) -> MethodRouter<AdminState>),
    /// `common::ops::router`, merged into the admin listener (and also on `METRICS_ADDR`).
    Ops,
    /// `crate::webhook::router`, on the public listener.
    Webhook,
}

/// What a request or response body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// JSON described by a schema in the document's `components.schemas`.
    Json(&'static str),
    /// Plain text (the Prometheus exposition format, "ok").
    Text,
}

/// One documented answer of a route.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// When it happens.
    pub description: &'static str,
    /// Its body, if any.
    pub body: Option<Body>,
}

/// One route: method, path (axum 0.8 syntax, which is also OpenAPI's) and its documentation.
#[derive(Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template, `{name}` for parameters.
    pub path: &'static str,
    /// Who answers it.
    pub serve: Serve,
    /// OpenAPI `operationId`.
    pub operation_id: &'static str,
    /// Group in the document.
    pub tag: &'static str,
    /// One line.
    pub summary: &'static str,
    /// More words, when the summary is not enough.
    pub description: &'static str,
    /// The request body, if any.
    pub request: Option<Body>,
    /// The answers, besides the generic ones.
    pub answers: &'static [Answer],
}

impl Route {
    /// The listener that serves it.
    pub fn listener(&self) -> Listener {
        match self.serve {
            Serve::Admin(_) | Serve::Ops => Listener::Admin,
            Serve::Webhook => Listener::Public,
        }
    }

    /// Everything under `/api/` on the admin listener needs the bearer token.
    pub fn requires_token(&self) -> bool {
        self.listener() == Listener::Admin && self.path.starts_with("/api/")
    }
}

const fn answer(status: u16, description: &'static str, body: Option<Body>) -> Answer {
    Answer {
        status,
        description,
        body,
    }
}

const ERROR: Option<Body> = Some(Body::Json("Error"));
const NOT_FOUND: Answer = answer(404, "No integration with this id.", ERROR);
const UNAVAILABLE: Answer = answer(503, "Redis did not answer.", ERROR);
const TOO_LARGE: Answer = answer(413, "The body exceeds 64 KiB.", ERROR);
const MALFORMED: Answer = answer(400, "The body is not a JSON object.", ERROR);

/// Every route, in the order the document lists them.
pub const ROUTES: &[Route] = &[
    Route {
        method: Method::Get,
        path: "/api/dingtalk/integrations",
        serve: Serve::Admin(|m| on(m, integrations::list)),
        operation_id: "listIntegrations",
        tag: "integrations",
        summary: "List every integration, secrets masked.",
        description: "",
        request: None,
        answers: &[
            answer(
                200,
                "The integrations, sorted by id.",
                Some(Body::Json("IntegrationList")),
            ),
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Put,
        path: "/api/dingtalk/integrations/{id}",
        serve: Serve::Admin(|m| on(m, integrations::put)),
        operation_id: "putIntegration",
        tag: "integrations",
        summary: "Create or replace an integration.",
        description: "The id in the path wins: the body may omit `id`; a different one is 422. \
            Every bad field is reported at once.",
        request: Some(Body::Json("IntegrationSpec")),
        answers: &[
            answer(200, "Replaced.", Some(Body::Json("Integration"))),
            answer(201, "Created.", Some(Body::Json("Integration"))),
            MALFORMED,
            TOO_LARGE,
            answer(
                422,
                "One or more fields are invalid; `error.fields` names each.",
                ERROR,
            ),
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Get,
        path: "/api/dingtalk/integrations/{id}",
        serve: Serve::Admin(|m| on(m, integrations::get)),
        operation_id: "getIntegration",
        tag: "integrations",
        summary: "Read an integration, secrets masked.",
        description: "",
        request: None,
        answers: &[
            answer(200, "The integration.", Some(Body::Json("Integration"))),
            NOT_FOUND,
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Delete,
        path: "/api/dingtalk/integrations/{id}",
        serve: Serve::Admin(|m| on(m, integrations::delete)),
        operation_id: "deleteIntegration",
        tag: "integrations",
        summary: "Delete an integration and its trigger binding.",
        description: "",
        request: None,
        answers: &[answer(204, "Deleted.", None), NOT_FOUND, UNAVAILABLE],
    },
    Route {
        method: Method::Post,
        path: "/api/dingtalk/integrations/{id}/test",
        serve: Serve::Admin(|m| on(m, integrations::test)),
        operation_id: "testIntegration",
        tag: "integrations",
        summary: "Run the preflight checklist against DingTalk.",
        description: "Checks credentials (an access token), the contact read permission (a \
            one-user listsimple), the robot code, the callback token and AES key, and the \
            webhook URL; answers 200 whenever the checks could run, with `ok` true when no item \
            failed, and lists what to enter in the DingTalk console. Needs PUBLIC_BASE_URL.",
        request: None,
        answers: &[
            answer(200, "The checklist.", Some(Body::Json("Preflight"))),
            NOT_FOUND,
            answer(409, "PUBLIC_BASE_URL is not set.", ERROR),
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Get,
        path: "/api/dingtalk/integrations/{id}/stream",
        serve: Serve::Admin(|m| on(m, integrations::stream_status)),
        operation_id: "getStreamStatus",
        tag: "integrations",
        summary: "Show the integration's transport and its Stream connections.",
        description: "`connection_mode`, then one entry per connection slot             (STREAM_CONNECTIONS_PER_APP): the replica holding it, `connected` or `connecting`,             when it connected and its age, the last frame received, and the slot's last error             (e.g. `authFailed`). A slot nobody reported in the last few seconds is `unassigned`.             `last_error` is the newest error over all slots.",
        request: None,
        answers: &[
            answer(200, "The status.", Some(Body::Json("StreamStatus"))),
            NOT_FOUND,
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Put,
        path: "/api/dingtalk/integrations/{id}/trigger",
        serve: Serve::Admin(|m| on(m, integrations::put_trigger)),
        operation_id: "putTrigger",
        tag: "triggers",
        summary: "Bind the expert that answers for this integration.",
        description: "What publishing an expert with a DingTalk trigger does.",
        request: Some(Body::Json("TriggerRequest")),
        answers: &[
            answer(200, "Bound.", Some(Body::Json("TriggerBinding"))),
            MALFORMED,
            NOT_FOUND,
            TOO_LARGE,
            answer(
                422,
                "xpert_id is missing or invalid, or an unknown field was sent.",
                ERROR,
            ),
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Get,
        path: "/api/dingtalk/integrations/{id}/trigger",
        serve: Serve::Admin(|m| on(m, integrations::get_trigger)),
        operation_id: "getTrigger",
        tag: "triggers",
        summary: "Read the trigger binding.",
        description: "",
        request: None,
        answers: &[
            answer(200, "The binding.", Some(Body::Json("TriggerBinding"))),
            answer(404, "No such integration, or no binding.", ERROR),
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Delete,
        path: "/api/dingtalk/integrations/{id}/trigger",
        serve: Serve::Admin(|m| on(m, integrations::delete_trigger)),
        operation_id: "deleteTrigger",
        tag: "triggers",
        summary: "Remove the trigger binding.",
        description: "",
        request: None,
        answers: &[
            answer(204, "Unbound.", None),
            answer(404, "No such integration, or no binding.", ERROR),
            UNAVAILABLE,
        ],
    },
    Route {
        method: Method::Get,
        path: "/openapi.json",
        serve: Serve::Admin(|m| on(m, openapi::serve)),
        operation_id: "getOpenApi",
        tag: "ops",
        summary: "This document.",
        description: "",
        request: None,
        answers: &[answer(200, "OpenAPI 3.1.", Some(Body::Json("OpenApi")))],
    },
    Route {
        method: Method::Get,
        path: "/healthz",
        serve: Serve::Ops,
        operation_id: "healthz",
        tag: "ops",
        summary: "Liveness: 200 while the process answers.",
        description: "",
        request: None,
        answers: &[answer(200, "Alive.", Some(Body::Text))],
    },
    Route {
        method: Method::Get,
        path: "/readyz",
        serve: Serve::Ops,
        operation_id: "readyz",
        tag: "ops",
        summary: "Readiness: NATS and Redis reachable.",
        description: "",
        request: None,
        answers: &[
            answer(200, "Ready.", Some(Body::Json("Readiness"))),
            answer(
                503,
                "A dependency is unreachable.",
                Some(Body::Json("Readiness")),
            ),
        ],
    },
    Route {
        method: Method::Get,
        path: "/metrics",
        serve: Serve::Ops,
        operation_id: "metrics",
        tag: "ops",
        summary: "Prometheus metrics.",
        description: "",
        request: None,
        answers: &[answer(200, "Text exposition format.", Some(Body::Text))],
    },
    Route {
        method: Method::Post,
        path: "/api/dingtalk/webhook/{integration_id}",
        serve: Serve::Webhook,
        operation_id: "webhook",
        tag: "dingtalk",
        summary: "DingTalk callbacks: robot messages, event subscriptions, card actions.",
        description: "Robot messages are signed with the `timestamp` and `sign` headers; event \
            subscriptions arrive as `{\"encrypt\": …}` with `signature`/`msg_signature`, \
            `timestamp`/`timeStamp` and `nonce` in the query and are answered with the \
            encrypted `success`. Acknowledged only once the event is durably on the bus.",
        request: Some(Body::Json("Callback")),
        answers: &[
            answer(
                200,
                "Accepted (or a duplicate).",
                Some(Body::Json("CallbackAnswer")),
            ),
            answer(400, "Malformed or undecryptable.", ERROR),
            answer(401, "Bad signature or stale timestamp.", ERROR),
            answer(
                403,
                "The integration does not accept HTTP callbacks, or an unsigned card action \
                 names no card the gateway sent where it was pressed (`unknown_card`).",
                ERROR,
            ),
            answer(404, "No integration with this id.", ERROR),
            answer(408, "The body did not arrive within 2 s.", ERROR),
            answer(413, "Body too large.", ERROR),
            answer(
                503,
                "The bus did not confirm in time; DingTalk will redeliver.",
                ERROR,
            ),
        ],
    },
    Route {
        method: Method::Post,
        path: "/api/dingtalk/webhook/{integration_id}/card",
        serve: Serve::Webhook,
        operation_id: "cardWebhook",
        tag: "dingtalk",
        summary: "DingTalk card actions (a button pressed on a card the gateway sent).",
        description: "The URL registered as the card callback; same checks and answers as the \
            webhook.",
        request: Some(Body::Json("Callback")),
        answers: &[
            answer(
                200,
                "Accepted (or a duplicate).",
                Some(Body::Json("CallbackAnswer")),
            ),
            answer(400, "Malformed or undecryptable.", ERROR),
            answer(401, "Bad signature or stale timestamp.", ERROR),
            answer(
                403,
                "The integration does not accept HTTP callbacks, or an unsigned press names no \
                 card the gateway sent where it was pressed (`unknown_card`).",
                ERROR,
            ),
            answer(404, "No integration with this id.", ERROR),
            answer(408, "The body did not arrive within 2 s.", ERROR),
            answer(413, "Body too large.", ERROR),
            answer(
                503,
                "The bus did not confirm in time; DingTalk will redeliver.",
                ERROR,
            ),
        ],
    },
];

/// The admin handlers of [`ROUTES`], those under `/api/` behind the bearer token.
pub fn admin_router(admin_token: Option<Secret>) -> Router<AdminState> {
    let mut protected = Router::new();
    let mut open = Router::new();
    for route in ROUTES {
        let Serve::Admin(handler) = route.serve else {
            continue;
        };
        let method_router = handler(route.method.filter());
        if route.requires_token() {
            protected = protected.route(route.path, method_router);
        } else {
            open = open.route(route.path, method_router);
        }
    }
    protected
        .route_layer(middleware::from_fn_with_state(
            admin_token,
            auth::require_token,
        ))
        .merge(open)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_route_is_listed_once() {
        let mut seen = HashSet::new();
        for route in ROUTES {
            assert!(
                seen.insert((route.method, route.path)),
                "{} {} listed twice",
                route.method.as_str(),
                route.path
            );
        }
        let ids: HashSet<_> = ROUTES.iter().map(|r| r.operation_id).collect();
        assert_eq!(ids.len(), ROUTES.len(), "operation ids must be unique");
    }

    #[test]
    fn only_admin_api_routes_need_the_token() {
        for route in ROUTES {
            let expected = route.path.starts_with("/api/dingtalk/integrations");
            assert_eq!(route.requires_token(), expected, "{}", route.path);
        }
    }
}
