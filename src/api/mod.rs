//! HTTP: one module per dialect. Each parses its wire format, authenticates the
//! caller, calls the service and renders its own success and error shapes.
//! Only this layer knows HTTP, XML and JSON.

pub mod commvault;
mod direct;
pub mod json_text;
pub mod native;
mod normalize;
pub mod ops;
pub mod ui;
pub mod vsphere;
pub mod websession;

use crate::domain::Dialect;
use crate::service::{Origin, Service};
use axum::Router;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use bytes::Bytes;
use ipnet::IpNet;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use direct::{App, Direct, Get, handler};

/// HTTP settings shared by the dialects.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Peers whose `X-Forwarded-For` is believed (CIDR blocks, e.g. `10.0.0.0/8`).
    pub trusted_proxies: Vec<IpNet>,
    /// Serve Prometheus metrics at `/metrics` (no token needed).
    pub metrics: bool,
    /// At shutdown, how long in-flight requests may run before their connections
    /// are dropped.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Log a `finished processing request` line (status, latency) for every request
    /// at `info`; with `false` it is logged at `debug`. The request span, and so the
    /// request id on every other line, stays either way. Formatting and writing that
    /// line is the largest single cost of a session validation (see bench/REPORT.md).
    pub request_log: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            metrics: true,
            shutdown_timeout: Duration::from_secs(30),
            request_log: true,
        }
    }
}

/// Settings of the dialects themselves.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DialectConfig {
    /// Domain appended to user names where vSphere clients expect `name@domain`.
    pub vsphere_domain: String,
}

impl Default for DialectConfig {
    fn default() -> Self {
        DialectConfig {
            vsphere_domain: "local".into(),
        }
    }
}

/// What every handler can reach: one `Arc`, so that the clone every handler's
/// `State` extractor makes is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// The contents of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    pub service: Service,
    pub http: Arc<HttpConfig>,
    pub dialects: Arc<DialectConfig>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Requests arrive over TLS: cookies must be `Secure`.
    pub secure_transport: bool,
    /// Cancelled when the server starts shutting down: long-lived responses (the
    /// event stream) end then, so that they do not hold up a graceful shutdown.
    pub shutting_down: CancellationToken,
}

impl AppState {
    pub fn new(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }

    /// The same state, for requests that arrive over TLS.
    #[must_use]
    pub fn over_tls(&self) -> Self {
        AppState::new(Shared {
            secure_transport: true,
            ..Shared::clone(&self.0)
        })
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl FromRef<AppState> for Service {
    fn from_ref(s: &AppState) -> Service {
        s.service.clone()
    }
}

/// A JSON answer, like `axum::Json`, serialized into a buffer that holds a usual
/// answer at once (axum's starts at 128 bytes and grows, copying, several times for
/// a session or a user: a measurable part of a session get).
#[derive(Clone, Copy, Debug)]
pub struct Json<T>(pub T);

/// A session id on the wire, upper-case hyphenated like its `Display`, written from a
/// stack buffer (no `String`, no formatting machinery: it is in every session answer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub crate::domain::SessionId);

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = hyphenated(&self.0.0, Case::Upper);
        // Only ASCII hex digits and hyphens were written.
        s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
    }
}

/// Which hex digits [`hyphenated`] writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Case {
    Upper,
    Lower,
}

/// `id` as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, two digits per byte from a
/// table: the uuid crate's encoder, digit by digit, cost ~190 instructions, and
/// every session answer (its id) and every request (its request id) makes one.
/// The test compares it with the uuid crate's.
pub fn hyphenated(id: &uuid::Uuid, case: Case) -> [u8; 36] {
    const fn table(digits: &[u8; 16]) -> [[u8; 2]; 256] {
        let mut t = [[0u8; 2]; 256];
        let mut i = 0;
        while i < 256 {
            t[i] = [digits[i >> 4], digits[i & 15]];
            i += 1;
        }
        t
    }
    static UPPER: [[u8; 2]; 256] = table(b"0123456789ABCDEF");
    static LOWER: [[u8; 2]; 256] = table(b"0123456789abcdef");
    let digits = match case {
        Case::Upper => &UPPER,
        Case::Lower => &LOWER,
    };
    let mut out = [b'-'; 36];
    // Where each byte's two digits go: after 4, 6, 8 and 10 bytes comes a hyphen.
    const AT: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
    for (&byte, at) in id.as_bytes().iter().zip(AT) {
        out[at..at + 2].copy_from_slice(&digits[usize::from(byte)]);
    }
    out
}

/// An instant on the wire: RFC 3339 UTC with milliseconds, written straight from a
/// stack buffer (no `String`, no formatting machinery: every session answer has some).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WireTime(pub crate::domain::Timestamp);

impl Serialize for WireTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.rfc3339() {
            Some(text) => s.serialize_str(text.as_str()),
            None => s.collect_str(&self.0),
        }
    }
}

/// Enough for a session with its user; larger answers grow as usual.
const JSON_BUFFER: usize = 1024;

/// Up to how many header values [`header`] looks through one by one.
const HEADER_SCAN: usize = 12;

/// The first value of header `name`, as `HeaderMap::get` gives it. A request with
/// a few headers (a management client's usual three to six) is looked through in
/// order, comparing names, rather than hashed: the hash of a name not in the map
/// (`X-Request-Id`, `only-active-sessions`) or of a non-standard one (`Authtoken`,
/// `vmware-api-session-id`) cost more than the scan, and a session get looks up
/// two to four headers (~450 instructions per Commvault `GET Session`).
pub fn header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    if headers.len() > HEADER_SCAN {
        return headers.get(name);
    }
    headers.iter().find_map(|(k, v)| (k == name).then_some(v))
}

/// The value of header `name` if it is given exactly once (`None` if absent or
/// repeated), looked up as [`header`] does.
pub fn single_header<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h HeaderValue> {
    if headers.len() > HEADER_SCAN {
        let mut values = headers.get_all(name).iter();
        return match (values.next(), values.next()) {
            (Some(v), None) => Some(v),
            _ => None,
        };
    }
    let mut values = headers.iter().filter(|(k, _)| *k == name).map(|(_, v)| v);
    match (values.next(), values.next()) {
        (Some(v), None) => Some(v),
        _ => None,
    }
}

/// The `Content-Type` of the vSphere and native JSON answers. Header values are
/// constants, made (and checked) once at compile time: `HeaderValue::from_static`
/// with a runtime argument checks every byte of it on every answer.
pub const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        json_answer(&self.0, APPLICATION_JSON)
    }
}

/// `value` as JSON with the given `Content-Type`, serialized into a buffer that
/// holds a usual answer at once; a value that cannot be serialized is logged and
/// answered 500 with no detail.
pub fn json_answer<T: Serialize + ?Sized>(
    value: &T,
    content_type: HeaderValue,
) -> axum::response::Response {
    let mut buf = Vec::with_capacity(JSON_BUFFER);
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => typed_answer(buf, content_type),
        Err(e) => {
            tracing::error!(error = %e, "could not render JSON");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A 200 answer of `body` with the given `Content-Type`, built directly (a `Vec`'s
/// own `into_response` sets a `Content-Type` that the tuple form then replaces).
pub fn typed_answer(body: Vec<u8>, content_type: HeaderValue) -> axum::response::Response {
    let mut resp = axum::response::Response::new(axum::body::Body::from(body));
    resp.headers_mut()
        .insert(axum::http::header::CONTENT_TYPE, content_type);
    resp
}

/// The whole HTTP application: every dialect, behind path normalization, with
/// the session gets served before the router (`direct`).
pub fn app(state: AppState) -> App {
    let direct = [
        commvault::direct_routes(),
        vsphere::direct_routes(),
        native::direct_routes(),
    ]
    .into_iter()
    .flatten()
    .collect();
    App::new(direct, router(state.clone()), state)
}

pub fn router(state: AppState) -> Router {
    let routes = Router::new()
        .merge(commvault::routes())
        .merge(vsphere::routes())
        .merge(native::routes())
        .merge(ui::routes())
        .merge(ops::routes(&state))
        .fallback(not_found);
    ops::instrument(routes, state.http.request_log).with_state(state)
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}

/// Why [`single_query_param`] refused a query.
#[derive(Debug, PartialEq, Eq)]
pub struct RepeatedParam;

/// The value of a query parameter that may be given at most once, decoded:
/// `Ok(None)` when absent, `Err` when given again. `is_key` sees the decoded name.
/// A query with nothing percent- or plus-encoded (what clients send) is read in
/// place, since decoding would not change it; any other through `form_urlencoded`.
pub fn single_query_param<'q>(
    query: &'q str,
    is_key: impl Fn(&str) -> bool,
) -> Result<Option<Cow<'q, str>>, RepeatedParam> {
    if query.bytes().any(|b| b == b'%' || b == b'+') {
        let mut values = form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| is_key(k))
            .map(|(_, v)| v);
        let first = values.next();
        if first.is_some() && values.next().is_some() {
            return Err(RepeatedParam);
        }
        Ok(first)
    } else {
        // Pairs found by position: `&` and `=` are ASCII, so every cut is at a
        // character boundary (a plain loop: `str::split` and `split_once` cost more
        // than the rest of this for the usual one-pair query).
        let bytes = query.as_bytes();
        let mut found = None;
        let mut start = 0;
        while start <= bytes.len() {
            let end = bytes[start..]
                .iter()
                .position(|&b| b == b'&')
                .map_or(bytes.len(), |i| start + i);
            let pair = &query[start..end];
            let (k, v) = match pair.bytes().position(|b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, ""),
            };
            if is_key(k) {
                if found.is_some() {
                    return Err(RepeatedParam);
                }
                found = Some(Cow::Borrowed(v));
            }
            start = end + 1;
        }
        Ok(found)
    }
}

tokio::task_local! {
    static PEER: SocketAddr;
}

/// Runs `fut`, one request's future, with `peer` as the address [`ClientAddr`]
/// reads. A task-local rather than a `ConnectInfo` extension: a fourth extension
/// (beside axum's original URI, matched path and URL parameters) grows every
/// request's extension map, which costs more than this scope.
pub fn with_peer<F: std::future::Future>(
    peer: SocketAddr,
    fut: F,
) -> tokio::task::futures::TaskLocalFuture<SocketAddr, F> {
    PEER.scope(peer, fut)
}

/// The client's address: the peer, or for a trusted proxy the right-most
/// untrusted address of `X-Forwarded-For`. Written out only when used (a login, a
/// logout): most requests never need it as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientAddr(Host);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// The peer, not a trusted proxy (the usual case).
    Peer(IpAddr),
    /// Resolved through `X-Forwarded-For`, or `unknown`.
    Text(String),
}

impl<S> FromRequestParts<S> for ClientAddr
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr::of(&parts.headers, &AppState::from_ref(state)))
    }
}

impl ClientAddr {
    /// The client of the request with these headers, now being served.
    pub fn of(headers: &HeaderMap, state: &AppState) -> Self {
        // Set by the server (`with_peer`); absent when the app is called in process.
        let peer = PEER.try_with(|p| p.ip()).ok();
        let trusted = &state.http.trusted_proxies;
        ClientAddr(match peer {
            Some(ip) if !trusted.iter().any(|n| n.contains(&ip)) => Host::Peer(ip),
            _ => Host::Text(client_address(peer, headers, trusted)),
        })
    }
}

fn client_address(peer: Option<IpAddr>, headers: &HeaderMap, trusted: &[IpNet]) -> String {
    let Some(peer) = peer else {
        return "unknown".into();
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer.to_string();
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|h| h.trim().parse::<IpAddr>().ok())
        .collect();
    hops.iter()
        .rev()
        .find(|ip| !is_trusted(ip))
        .or(hops.first())
        .copied()
        .unwrap_or(peer)
        .to_string()
}

impl ClientAddr {
    /// The address as text (an IP address, or `unknown`).
    pub fn host(&self) -> String {
        match &self.0 {
            Host::Peer(ip) => ip.to_string(),
            Host::Text(t) => t.clone(),
        }
    }

    pub fn origin(&self, dialect: Dialect) -> Origin {
        Origin {
            dialect,
            source: self.host(),
        }
    }
}

/// `req` with its body limited to `http.max_body_bytes`: axum's body extractors
/// then answer a larger body with their 413 rejection. Applied where a body is read
/// with axum's extractors (the native JSON, the console's forms; [`read_body`]
/// takes the limit itself) rather than by a `DefaultBodyLimit` layer, which inserts
/// an extension into every request, the many without a body too (in the profile,
/// ~500 instructions of a session get: the insert and the growth of the extension map).
pub fn limited(req: axum::extract::Request, state: &AppState) -> axum::extract::Request {
    let limit = state.http.max_body_bytes;
    req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, limit)))
}

/// Why a request body could not be read: over `http.max_body_bytes` (each dialect
/// answers 413 in its own shape), or broken off (400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    Unreadable,
}

/// Reads a request body of at most `limit` bytes. A body that comes in one chunk
/// (a small one always does: hyper reads it with the head) is handed over as it
/// is; several are joined. A declared length over the limit is refused before
/// anything is read.
///
/// Not axum's `Bytes` extractor behind `http_body_util::Limited`: that boxed the
/// body twice and collected it through a buffer list (this way, ~1,200 fewer
/// instructions per JSON-RPC request; bench/PROFILE.md).
pub async fn read_body(mut body: axum::body::Body, limit: usize) -> Result<Bytes, BodyError> {
    use axum::body::HttpBody;
    use http_body_util::BodyExt;
    if body.size_hint().lower() > limit as u64 {
        return Err(BodyError::TooLarge);
    }
    let mut whole = Bytes::new();
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Unreadable)?;
        // Trailers carry nothing a dialect reads.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        let read = joined.as_ref().map_or(whole.len(), |j| j.len());
        if read + data.len() > limit {
            return Err(BodyError::TooLarge);
        }
        match &mut joined {
            Some(j) => j.extend_from_slice(&data),
            None if whole.is_empty() => whole = data,
            None => {
                let mut j = bytes::BytesMut::with_capacity(read + data.len());
                j.extend_from_slice(&whole);
                j.extend_from_slice(&data);
                joined = Some(j);
            }
        }
        // All of a declared length is here: asking for the end would cost another
        // round through hyper's body channel (~450 instructions a request).
        if body.is_end_stream() {
            break;
        }
    }
    Ok(joined.map_or(whole, bytes::BytesMut::freeze))
}

/// A request's body within `http.max_body_bytes` (see [`read_body`]).
pub async fn limited_body(body: axum::body::Body, state: &AppState) -> Result<Bytes, BodyError> {
    // A request without a body (every session get but JSON-RPC's) reads nothing.
    if axum::body::HttpBody::is_end_stream(&body) {
        return Ok(Bytes::new());
    }
    read_body(body, state.http.max_body_bytes).await
}

/// The request body within `http.max_body_bytes` (see [`read_body`]). Must be the
/// last extractor.
#[derive(Debug)]
pub struct LimitedBytes(pub Result<Bytes, BodyError>);

impl<S> axum::extract::FromRequest<S> for LimitedBytes
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Infallible;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Infallible> {
        let body = req.into_body();
        Ok(LimitedBytes(
            limited_body(body, &AppState::from_ref(state)).await,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body streamed in `chunks`, without a declared length; `Err` items break it off.
    fn streamed(chunks: Vec<Result<&'static str, &'static str>>) -> axum::body::Body {
        axum::body::Body::from_stream(futures_util::stream::iter(chunks.into_iter().map(|c| {
            c.map(|s| Bytes::from_static(s.as_bytes()))
                .map_err(std::io::Error::other)
        })))
    }

    #[tokio::test]
    async fn bodies_are_read_whole_within_the_limit() {
        let read = |body, limit| read_body(body, limit);
        assert_eq!(read(axum::body::Body::empty(), 0).await, Ok(Bytes::new()));
        assert_eq!(
            read(axum::body::Body::from("abc"), 3).await,
            Ok(Bytes::from_static(b"abc"))
        );
        // Declared over the limit: refused before reading.
        assert_eq!(
            read(axum::body::Body::from("abcd"), 3).await,
            Err(BodyError::TooLarge)
        );
        // Streamed: chunks joined, empty ones skipped, the limit on the running total.
        assert_eq!(
            read(streamed(vec![Ok("ab"), Ok(""), Ok("cd"), Ok("e")]), 5).await,
            Ok(Bytes::from_static(b"abcde"))
        );
        assert_eq!(
            read(streamed(vec![Ok("ab"), Ok("cd"), Ok("e")]), 4).await,
            Err(BodyError::TooLarge)
        );
        assert_eq!(
            read(streamed(vec![Ok("ab"), Err("reset")]), 10).await,
            Err(BodyError::Unreadable)
        );
    }

    /// A body of a declared length that fails if polled once its data is read.
    struct Declared(Option<Bytes>);

    impl axum::body::HttpBody for Declared {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
            std::task::Poll::Ready(Some(match self.0.take() {
                Some(data) => Ok(hyper::body::Frame::data(data)),
                None => Err(std::io::Error::other("polled past its end")),
            }))
        }

        fn is_end_stream(&self) -> bool {
            self.0.is_none()
        }
    }

    #[tokio::test]
    async fn a_body_of_declared_length_is_not_polled_past_its_end() {
        let body = axum::body::Body::new(Declared(Some(Bytes::from_static(b"{}"))));
        assert_eq!(read_body(body, 10).await, Ok(Bytes::from_static(b"{}")));
    }

    fn headers(xff: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", xff.parse().unwrap());
        h
    }

    /// Looked through or hashed, a header is found as `HeaderMap` finds it: the
    /// first of several values, none for a name not given.
    #[test]
    fn headers_are_found_as_the_map_finds_them() {
        let name = HeaderName::from_static("x-request-id");
        for extra in [0, HEADER_SCAN] {
            let mut h = HeaderMap::new();
            for i in 0..extra {
                h.insert(
                    HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                    HeaderValue::from_static("f"),
                );
            }
            h.insert(axum::http::header::ACCEPT, HeaderValue::from_static("a"));
            assert_eq!(header(&h, &name), None);
            assert_eq!(single_header(&h, &name), None);
            h.append(&name, HeaderValue::from_static("one"));
            assert_eq!(header(&h, &name), h.get(&name));
            assert_eq!(single_header(&h, &name).unwrap(), "one");
            h.append(&name, HeaderValue::from_static("two"));
            assert_eq!(header(&h, &name).unwrap(), "one");
            assert_eq!(single_header(&h, &name), None);
            assert_eq!(
                header(&h, &axum::http::header::ACCEPT),
                h.get(axum::http::header::ACCEPT)
            );
        }
    }

    #[test]
    fn ids_are_hyphenated_as_the_uuid_crate_does() {
        for n in [0u128, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            let id = uuid::Uuid::from_u128(n);
            let mut buf = uuid::Uuid::encode_buffer();
            assert_eq!(
                &hyphenated(&id, Case::Upper),
                id.hyphenated().encode_upper(&mut buf).as_bytes()
            );
            assert_eq!(
                &hyphenated(&id, Case::Lower),
                id.hyphenated().encode_lower(&mut buf).as_bytes()
            );
        }
        for _ in 0..1000 {
            let id = uuid::Uuid::new_v4();
            assert_eq!(
                hyphenated(&id, Case::Lower).as_slice(),
                id.hyphenated().to_string().as_bytes()
            );
        }
    }

    #[test]
    fn single_query_params_decode_only_what_is_encoded() {
        let is = |name: &'static str| move |k: &str| k == name;
        let one = |q, k| single_query_param(q, is(k));
        assert_eq!(one("~action=get&x=1", "~action"), Ok(Some("get".into())));
        assert!(matches!(
            one("a=1&~action=get", "~action"),
            Ok(Some(Cow::Borrowed("get")))
        ));
        assert_eq!(one("%7Eaction=g%65t", "~action"), Ok(Some("get".into())));
        assert_eq!(one("userId=a+b%20c", "userId"), Ok(Some("a b c".into())));
        assert_eq!(one("userId", "userId"), Ok(Some("".into())));
        assert_eq!(one("", "userId"), Ok(None));
        assert_eq!(one("x=1&&y", "userId"), Ok(None));
        assert_eq!(one("userId=1&userId=2", "userId"), Err(RepeatedParam));
        assert_eq!(one("userId=1&user%49d=2", "userId"), Err(RepeatedParam));
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: IpAddr = "10.1.1.1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        let h = headers("198.51.100.1, 203.0.113.9, 10.2.2.2");
        assert_eq!(client_address(Some(proxy), &h, &trusted), "203.0.113.9");
        assert_eq!(client_address(Some(stranger), &h, &trusted), "192.0.2.7");
        assert_eq!(
            client_address(Some(proxy), &HeaderMap::new(), &trusted),
            "10.1.1.1"
        );
        assert_eq!(
            client_address(Some(proxy), &headers("garbage"), &trusted),
            "10.1.1.1"
        );
        assert_eq!(client_address(None, &h, &trusted), "unknown");
    }
}
