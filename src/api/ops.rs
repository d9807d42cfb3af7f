//! Operations: health and readiness probes, Prometheus metrics, and the layers
//! every request goes through (request id, latency histogram, request log line).
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
//! UUID; the id is returned in the response's `X-Request-Id`, and every log line of
//! the request carries it (`crate::logging`: a task-local, not a `tracing` span).

use super::AppState;
use crate::logging;
use crate::telemetry::{self, UNMATCHED_ROUTE};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics::Histogram;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::task::futures::TaskLocalFuture;
use tracing::Level;

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

/// Wraps every route (and the fallback) of `router` in [`Instrument`] (request id,
/// latency histogram and the `finished processing request` line at
/// `info` with `log_at_info`, otherwise `debug`). Call it after the last route is
/// added.
pub fn instrument(router: Router<AppState>, log_at_info: bool) -> Router<AppState> {
    router.layer(InstrumentLayer { log_at_info })
}

/// The layer of [`Instrument`].
#[derive(Clone, Copy, Debug)]
pub struct InstrumentLayer {
    log_at_info: bool,
}

impl<S> tower::Layer<S> for InstrumentLayer {
    type Service = Instrument<S>;

    fn layer(&self, inner: S) -> Instrument<S> {
        Instrument {
            inner,
            log_at_info: self.log_at_info,
        }
    }
}

/// What every request goes through, in one service and one future (tower-http's
/// request-id, propagate and trace layers plus a latency middleware cost about a
/// quarter of a session validation, see `bench/PROFILE.md`):
/// - the request id is kept or made (see the module documentation) and returned
///   in the response's `X-Request-Id`;
/// - the inner service's future runs with the id in a task-local
///   (`crate::logging::in_request`), so every line it logs carries the id;
/// - its latency is recorded by route template, method and status, and a
///   `finished processing request` line (method, route, status, latency) is logged.
#[derive(Clone, Debug)]
pub struct Instrument<S> {
    inner: S,
    log_at_info: bool,
}

impl<S> tower::Service<Request> for Instrument<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = InstrumentFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .cloned()
            .map(RouteName::Matched);
        let inner = &mut self.inner;
        instrumented(req, route, self.log_at_info, |req| inner.call(req))
    }
}

/// The route template a request was served by, for the latency histogram and the
/// log line: from the router, or from a route served before it (`api::direct`).
/// Both are shared: cloning one allocates nothing.
#[derive(Clone, Debug)]
pub enum RouteName {
    Matched(MatchedPath),
    Direct(Arc<DirectLabel>),
}

/// The label of a route served before the router, with the histogram of its 200
/// answers once one is recorded: the hot path's answers skip the registry's lookup
/// (a lock and two hash lookups, ~250 instructions).
#[derive(Debug)]
pub struct DirectLabel {
    path: String,
    ok: OnceLock<Histogram>,
}

impl DirectLabel {
    pub fn new(path: &str) -> Self {
        DirectLabel {
            path: path.to_owned(),
            ok: OnceLock::new(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}

impl RouteName {
    fn as_str(&self) -> &str {
        match self {
            RouteName::Matched(m) => m.as_str(),
            RouteName::Direct(d) => &d.path,
        }
    }
}

/// Runs `call(req)`, the service that answers `req`, as [`Instrument`] describes:
/// with the request's id, and its latency recorded under `route` (`None`: the
/// unmatched-route label) when the response is ready.
pub fn instrumented<F: Future>(
    req: Request,
    route: Option<RouteName>,
    log_at_info: bool,
    call: impl FnOnce(Request) -> F,
) -> InstrumentFuture<F> {
    let start = Instant::now();
    let id = request_id(&req);
    let method = method_label(req.method());
    if tracing::enabled!(Level::DEBUG) {
        logging::with_request_id(id.clone(), || {
            tracing::debug!(method, "started processing request");
        });
    }
    // `call` only builds the handler's future: what it logs, it logs when polled,
    // inside the request's scope.
    let inner = logging::in_request(id.clone(), call(req));
    InstrumentFuture {
        inner,
        id: Some(id),
        route,
        method,
        start,
        log_at_info,
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Instrument`].
    pub struct InstrumentFuture<F> {
        #[pin]
        inner: TaskLocalFuture<HeaderValue, F>,
        // Taken into the response.
        id: Option<HeaderValue>,
        route: Option<RouteName>,
        method: &'static str,
        start: Instant,
        log_at_info: bool,
    }
}

impl<F, E> Future for InstrumentFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(r)) => r,
        };
        let elapsed = this.start.elapsed();
        let status = response.status().as_u16();
        let route = this
            .route
            .as_ref()
            .map_or(UNMATCHED_ROUTE, RouteName::as_str);
        let method = *this.method;
        match &*this.route {
            Some(RouteName::Direct(d)) if status == 200 => {
                d.ok.get_or_init(|| telemetry::latency_histogram(&d.path, method, status))
                    .record(elapsed.as_secs_f64())
            }
            _ => telemetry::http_request(route, method, status, elapsed),
        }
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let log_at_info = *this.log_at_info;
        let finished = || {
            let route = telemetry::route_label(route);
            let route = route.as_ref();
            if log_at_info {
                tracing::info!(
                    method,
                    route,
                    status,
                    latency_ms,
                    "finished processing request"
                );
            } else {
                tracing::debug!(
                    method,
                    route,
                    status,
                    latency_ms,
                    "finished processing request"
                );
            }
        };
        let enabled = if log_at_info {
            tracing::enabled!(Level::INFO)
        } else {
            tracing::enabled!(Level::DEBUG)
        };
        if enabled && let Some(id) = this.id.as_ref() {
            logging::with_request_id(id.clone(), finished);
        }
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        Poll::Ready(Ok(response))
    }
}

/// The request's id: its `X-Request-Id` if acceptable, otherwise a fresh UUID.
/// (Handlers and the log read it from `crate::logging`, not from the request.)
fn request_id(req: &Request) -> HeaderValue {
    if let Some(v) = super::single_header(req.headers(), &X_REQUEST_ID)
        && acceptable_request_id(v.as_bytes())
    {
        return v.clone();
    }
    let buf = super::hyphenated(&uuid::Uuid::new_v4(), super::Case::Lower);
    // One allocation that clones share (the log's task-local holds a clone): a
    // header value copied from a slice is a `Vec` that its first clone moves into
    // a second allocation.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(buf))
        .unwrap_or_else(|_| HeaderValue::from_static("-"))
}

fn acceptable_request_id(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
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
    fn several_or_unacceptable_request_ids_are_replaced() {
        let made = |req: &Request| uuid::Uuid::parse_str(request_id(req).to_str().unwrap()).is_ok();
        let req = Request::builder()
            .header("x-request-id", "one")
            .header("x-request-id", "two")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(made(&req));
        let req = Request::builder()
            .header("x-request-id", "<b>")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(made(&req));
        let req = Request::builder()
            .header("x-request-id", "one")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(request_id(&req), "one");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
