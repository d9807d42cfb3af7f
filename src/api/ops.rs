//! Operations: health and readiness probes, Prometheus metrics, and the layers
//! every request goes through (request id, request span, latency histogram).
//!
//! - `GET /healthz`: 200 while the process serves requests.
//! - `GET /readyz`: 200 when the store answers a ping, 503 otherwise.
//! - `GET /metrics`: the Prometheus text format (see `crate::telemetry`). Needs no
//!   token, like the probes; it carries counts only, never ids or secrets. It is
//!   served unless `http.metrics = false`; keep it from the outside with the
//!   listen address or a proxy rule for `/metrics`.
//!
//! Request ids: an incoming `X-Request-Id` of at most [`MAX_REQUEST_ID_LEN`]
//! characters from `[A-Za-z0-9._:-]` is kept, anything else is replaced by a fresh
//! UUID; the id is returned in the response's `X-Request-Id` and is a field of the
//! request's span, so every log line of the request carries it.

use super::AppState;
use crate::telemetry::{self, UNMATCHED_ROUTE};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::time::Instant;
use tower::ServiceBuilder;
use tower::util::MapRequestLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::{Level, Span};

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-chosen request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// `/healthz`, `/readyz` and (unless turned off) `/metrics`.
pub fn routes(state: &AppState) -> Router<AppState> {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if state.http.metrics {
        router.route("/metrics", get(metrics))
    } else {
        router
    }
}

async fn healthz() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, TEXT)], "ok\n")
}

async fn readyz(State(st): State<AppState>) -> Response {
    match st.service.ready().await {
        Ok(()) => ([(header::CONTENT_TYPE, TEXT)], "ready\n").into_response(),
        Err(e) => {
            e.log_if_internal();
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CONTENT_TYPE, TEXT)],
                "store unavailable\n",
            )
                .into_response()
        }
    }
}

async fn metrics(State(st): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        st.metrics.render(),
    )
}

/// Wraps every route (and the fallback) of `router` in the request-id, tracing and
/// latency layers; the line for each finished request is logged at `response_level`.
/// Call it after the last route is added.
pub fn instrument(router: Router<AppState>, response_level: Level) -> Router<AppState> {
    router.layer(
        ServiceBuilder::new()
            .layer(MapRequestLayer::new(
                drop_unacceptable_request_id as fn(Request) -> Request,
            ))
            .layer(SetRequestIdLayer::new(X_REQUEST_ID, MakeRequestUuid))
            .layer(
                TraceLayer::new_for_http()
                    .make_span_with(request_span as fn(&Request) -> Span)
                    .on_response(DefaultOnResponse::new().level(response_level)),
            )
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
            .layer(axum::middleware::from_fn(record_latency)),
    )
}

/// Removes an `X-Request-Id` that is not acceptable, so that a fresh one is made.
fn drop_unacceptable_request_id(mut req: Request) -> Request {
    let mut values = req.headers().get_all(&X_REQUEST_ID).iter();
    let keep = match (values.next(), values.next()) {
        (None, _) => return req,
        (Some(v), None) => acceptable_request_id(v.as_bytes()),
        (Some(_), Some(_)) => false,
    };
    if !keep {
        req.headers_mut().remove(&X_REQUEST_ID);
    }
    req
}

fn acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// The route template a request matched, never its raw path.
fn route_of(req: &Request) -> &str {
    req.extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
}

/// The `request` span: the request id (so that every line of the request carries
/// it), the method and the route template. The raw path is
/// not a field: formatting span fields is paid on every request whether or not a
/// line is logged inside it, and the template names the endpoint. `info_span!`
/// builds nothing when the span is disabled by the filter.
fn request_span(req: &Request) -> Span {
    let id = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "request",
        request_id = id,
        method = %req.method(),
        route = route_of(req),
    )
}

async fn record_latency(req: Request, next: Next) -> Response {
    // The template is shared (`Arc<str>` inside): cloning it allocates nothing.
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let start = Instant::now();
    let response = next.run(req).await;
    let route = matched
        .as_ref()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    telemetry::http_request(route, method, response.status().as_u16(), start.elapsed());
    response
}

/// The standard methods by name; anything else is `other`, so that clients cannot
/// invent label values.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_bounded_and_plain() {
        assert!(acceptable_request_id(b"0f8e2c1a-trace.id:7_x"));
        assert!(acceptable_request_id(&[b'a'; MAX_REQUEST_ID_LEN]));
        assert!(!acceptable_request_id(&[b'a'; MAX_REQUEST_ID_LEN + 1]));
        assert!(!acceptable_request_id(b""));
        assert!(!acceptable_request_id(b"has space"));
        assert!(!acceptable_request_id(b"quote\"brace{"));
        assert!(!acceptable_request_id("é".as_bytes()));
    }

    #[test]
    fn several_request_ids_are_all_dropped() {
        let req = Request::builder()
            .header("x-request-id", "one")
            .header("x-request-id", "two")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(
            drop_unacceptable_request_id(req)
                .headers()
                .get("x-request-id")
                .is_none()
        );
        let req = Request::builder()
            .header("x-request-id", "one")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            drop_unacceptable_request_id(req).headers()["x-request-id"],
            "one"
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
