//! Path normalization, applied before routing.
//!
//! - A trailing slash is dropped (`/commandcenter/api/` is the Commvault base that
//!   cvpysdk probes).
//! - Commvault clients mix `User` and `user`: a path whose first segment is a
//!   Commvault prefix (`commandcenter`, `webconsole`) or a Commvault endpoint at the
//!   root (`Login`, `Session`, ...) is lower-cased. Other dialects' paths are left
//!   exactly as sent. The query string is never touched.

use axum::Router;
use axum::extract::Request;
use axum::http::Uri;
use tower::util::MapRequest;

/// The router behind [`normalize`].
pub type NormalizedApp = MapRequest<Router, fn(Request) -> Request>;

pub fn wrap(router: Router) -> NormalizedApp {
    MapRequest::new(router, normalize as fn(Request) -> Request)
}

/// First path segments (lower case) that belong to the Commvault dialect.
const COMMVAULT_FIRST_SEGMENTS: &[&str] = &[
    "commandcenter",
    "webconsole",
    "login",
    "logout",
    "session",
    "sessions",
    "renewlogintoken",
    "user",
    "whoami",
    "v4",
];

fn normalize(mut req: Request) -> Request {
    if let Some(path) = normalized_path(req.uri().path()) {
        let pq = match req.uri().query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// The rewritten path, or `None` when it is already normal (the common case, no allocation).
fn normalized_path(path: &str) -> Option<String> {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    let first = trimmed
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("");
    let lower = COMMVAULT_FIRST_SEGMENTS
        .iter()
        .any(|s| s.eq_ignore_ascii_case(first))
        && trimmed.bytes().any(|b| b.is_ascii_uppercase());
    match (lower, trimmed.len() != path.len()) {
        (false, false) => None,
        (false, true) => Some(trimmed.to_string()),
        (true, _) => Some(trimmed.to_ascii_lowercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::normalized_path;

    #[test]
    fn commvault_paths_lower_case_others_untouched() {
        assert_eq!(normalized_path("/Login"), Some("/login".into()));
        assert_eq!(
            normalized_path("/CommandCenter/API/User/5"),
            Some("/commandcenter/api/user/5".into())
        );
        assert_eq!(
            normalized_path("/commandcenter/api/"),
            Some("/commandcenter/api".into())
        );
        assert_eq!(normalized_path("/session"), None);
        assert_eq!(normalized_path("/"), None);
        assert_eq!(normalized_path("/rest/com/vmware/cis/Session"), None);
        assert_eq!(
            normalized_path("/api/session/"),
            Some("/api/session".into())
        );
        assert_eq!(normalized_path("//"), Some("/".into()));
    }
}
