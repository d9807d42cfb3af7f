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
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
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

/// Wraps every route (and the fallback) of `router` in [`Instrument`] (request id,
/// `request` span, latency histogram and the `finished processing request` line at
/// `response_level`) and then in `inner`. Call it after the last route is added.
///
/// One `Router::layer` call for both: each one boxes every route once more, which
/// is an allocation and a dynamic call per request.
pub fn instrument<L>(router: Router<AppState>, response_level: Level, inner: L) -> Router<AppState>
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + 'static,
{
    router.layer(
        tower::ServiceBuilder::new()
            .layer(InstrumentLayer {
                log_at_info: response_level == Level::INFO,
            })
            .layer(inner),
    )
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
/// - the inner service runs in the `request` span (field `request_id`, entered on
///   every poll), so every line it logs carries the id;
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

    fn call(&mut self, mut req: Request) -> Self::Future {
        let start = Instant::now();
        let id = request_id(&mut req);
        // The template is shared (`Arc<str>` inside): cloning it allocates nothing.
        let route = req.extensions().get::<MatchedPath>().cloned();
        let method = method_label(req.method());
        // One field: formatting span fields is paid on every request, whether or
        // not anything is logged inside it. The route is on the finished line.
        // `display`: the id is plain ASCII (checked or made here), so it is written as
        // is rather than through `str`'s escaping `Debug`.
        let span = tracing::info_span!(
            "request",
            request_id = tracing::field::display(id.to_str().unwrap_or(""))
        );
        // The event names its span; entering it here would be one more enter and
        // exit per request for nothing (the inner `call` only builds a future, which
        // runs inside the span on every poll).
        tracing::debug!(parent: &span, method, "started processing request");
        let inner = self.inner.call(req);
        InstrumentFuture {
            inner,
            span,
            id: Some(id),
            route,
            method,
            start,
            log_at_info: self.log_at_info,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Instrument`].
    pub struct InstrumentFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        // Taken into the response.
        id: Option<HeaderValue>,
        route: Option<MatchedPath>,
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
        let _entered = this.span.enter();
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
            .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
        let method = *this.method;
        telemetry::http_request(route, method, status, elapsed);
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        if *this.log_at_info {
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
        if let Some(id) = this.id.take() {
            response.headers_mut().insert(X_REQUEST_ID, id);
        }
        Poll::Ready(Ok(response))
    }
}

/// The request's id: its `X-Request-Id` if acceptable, otherwise a fresh UUID
/// (which then replaces it in the request, for the handlers).
fn request_id(req: &mut Request) -> HeaderValue {
    let mut values = req.headers().get_all(&X_REQUEST_ID).iter();
    if let (Some(v), None) = (values.next(), values.next())
        && acceptable_request_id(v.as_bytes())
    {
        return v.clone();
    }
    let mut buf = uuid::Uuid::encode_buffer();
    let made = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
    let id = HeaderValue::from_str(made).unwrap_or_else(|_| HeaderValue::from_static("-"));
    req.headers_mut().insert(X_REQUEST_ID, id.clone());
    id
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
        let made = |req: &mut Request| {
            let id = request_id(req);
            assert_eq!(req.headers()["x-request-id"], id, "the handlers see it too");
            uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok()
        };
        let mut req = Request::builder()
            .header("x-request-id", "one")
            .header("x-request-id", "two")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(made(&mut req));
        assert_eq!(req.headers().get_all("x-request-id").iter().count(), 1);
        let mut req = Request::builder()
            .header("x-request-id", "<b>")
            .body(axum::body::Body::empty())
            .unwrap();
        assert!(made(&mut req));
        let mut req = Request::builder()
            .header("x-request-id", "one")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(request_id(&mut req), "one");
    }

    #[test]
    fn unknown_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
