//! Prometheus metrics: their names and labels, in one place, and the one
//! process-wide recorder behind the `metrics` facade.
//!
//! | metric                                   | type      | labels                   |
//! |------------------------------------------|-----------|--------------------------|
//! | `sessiond_logins_total`                  | counter   | `dialect`, `result`      |
//! | `sessiond_live_sessions`                 | gauge     |                          |
//! | `sessiond_http_request_duration_seconds` | histogram | `route`, `method`, `status` |
//! | `sessiond_store_errors_total`            | counter   |                          |
//!
//! Label values come from small fixed sets (route templates, never raw paths), so
//! neither ids nor secrets ever become label values. The service records through
//! the facade (it is not HTTP); `api` renders the handle at `/metrics`.

use metrics::Histogram;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const LOGINS: &str = "sessiond_logins_total";
pub const LIVE_SESSIONS: &str = "sessiond_live_sessions";
pub const HTTP_DURATION: &str = "sessiond_http_request_duration_seconds";
pub const STORE_ERRORS: &str = "sessiond_store_errors_total";

/// Route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often histogram samples are folded into buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder as the process's `metrics` recorder. Only the
/// first call installs; every call returns the same handle, so several servers in
/// one process (tests) share one registry.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(LOGINS, "Login attempts by dialect and result");
    describe_gauge!(
        LIVE_SESSIONS,
        "Live sessions in the store (all instances), refreshed every session.sweep_interval"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency by route template, method and status"
    );
    describe_counter!(STORE_ERRORS, "Store (or system) failures behind a 503");
    // Present from the start, so that rate() works before the first failure.
    metrics::counter!(STORE_ERRORS).increment(0);
}

/// Folds histogram samples into their buckets periodically, so that memory stays
/// bounded when `/metrics` is not scraped, until `stop` fires.
pub fn spawn_upkeep(
    handle: PrometheusHandle,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    })
}

/// The `result` label of `sessiond_logins_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoginResult {
    Success,
    InvalidCredentials,
    Disabled,
    Locked,
    /// Refused by the per-user session limit.
    Limit,
    /// Store or system failure.
    Error,
}

impl LoginResult {
    pub fn key(self) -> &'static str {
        match self {
            LoginResult::Success => "success",
            LoginResult::InvalidCredentials => "invalid_credentials",
            LoginResult::Disabled => "disabled",
            LoginResult::Locked => "locked",
            LoginResult::Limit => "limit",
            LoginResult::Error => "error",
        }
    }
}

pub fn login(dialect: &'static str, result: LoginResult) {
    metrics::counter!(LOGINS, "dialect" => dialect, "result" => result.key()).increment(1);
}

pub fn store_error() {
    metrics::counter!(STORE_ERRORS).increment(1);
}

/// An audit event the store could not record: counted as a store error and logged
/// (the action it describes stands).
pub fn audit_not_recorded(kind: crate::domain::AuditKind, error: &dyn std::fmt::Display) {
    store_error();
    tracing::error!(kind = kind.key(), error = %error, "could not record audit event");
}

pub fn live_sessions(n: u64) {
    metrics::gauge!(LIVE_SESSIONS).set(n as f64);
}

/// Records one HTTP request. `route` is a route template (or [`UNMATCHED_ROUTE`]),
/// `method` one of a fixed set of names.
///
/// The histogram of each (route, method, status) is registered once and its handle
/// kept: a request allocates no label and does no registry lookup. Label values stay
/// in fixed sets (route templates, methods, the statuses the routes answer).
pub fn http_request(route: &str, method: &'static str, status: u16, elapsed: Duration) {
    with_latency_histogram(route, method, status, |h| h.record(elapsed.as_secs_f64()));
}

/// The latency histogram of one (route, method, status), for a caller that keeps
/// it (`api::ops` does for the 200 answers of each direct route).
pub fn latency_histogram(route: &str, method: &'static str, status: u16) -> Histogram {
    with_latency_histogram(route, method, status, Histogram::clone)
}

fn with_latency_histogram<T>(
    route: &str,
    method: &'static str,
    status: u16,
    f: impl FnOnce(&Histogram) -> T,
) -> T {
    let latency = http_latency();
    {
        let routes = latency.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = routes.get(route).and_then(|r| r.get(&(method, status))) {
            return f(h);
        }
    }
    let mut routes = latency.write().unwrap_or_else(PoisonError::into_inner);
    f(routes
        .entry(route.to_owned())
        .or_default()
        .entry((method, status))
        .or_insert_with(|| {
            metrics::histogram!(
                HTTP_DURATION,
                "route" => route_label(route).into_owned(),
                "method" => method,
                "status" => status.to_string(),
            )
        }))
}

/// A route template as reported in metrics and logs: in lower case. The Commvault
/// dialect routes its vendor spellings (`/commandcenter/api/Session`) beside the
/// lower-case paths it normalizes every other spelling to; both are one endpoint.
/// Borrowed (no copy) for every other template.
pub fn route_label(route: &str) -> std::borrow::Cow<'_, str> {
    if route.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(route.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(route)
    }
}

/// Registered latency histograms by route template, then (method, status). Hashed
/// with foldhash: the keys are ours (templates, fixed names), not the client's, and
/// SipHash was most of the cost of recording a request.
type HttpLatency =
    RwLock<foldhash::HashMap<String, foldhash::HashMap<(&'static str, u16), Histogram>>>;

fn http_latency() -> &'static HttpLatency {
    static LATENCY: OnceLock<HttpLatency> = OnceLock::new();
    LATENCY.get_or_init(HttpLatency::default)
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn route_labels_are_lower_case_and_borrowed_when_they_are() {
        assert_eq!(
            route_label("/commandcenter/api/Session"),
            "/commandcenter/api/session"
        );
        assert!(matches!(
            route_label("/v1/users/{id}"),
            std::borrow::Cow::Borrowed("/v1/users/{id}")
        ));
    }
}
