//! Path normalization, applied before routing.
//!
//! - A trailing slash is dropped (`/commandcenter/api/` is the Commvault base that
//!   cvpysdk probes).
//! - Commvault clients mix `User` and `user`: a path whose first segment is a
//!   Commvault prefix (`commandcenter`, `webconsole`) or a Commvault endpoint at the
//!   root (`Login`, `Session`, ...) is lower-cased, unless it is one of the
//!   endpoints as the vendor spells them (`/commandcenter/api/Session`, `/Login`:
//!   `commvault::VENDOR_SPELLINGS`), which are routed as sent. Other dialects'
//!   paths are left exactly as sent. The query string is never touched.

use super::commvault::{PREFIXES, VENDOR_SPELLINGS};
use axum::extract::Request;
use axum::http::Uri;
use axum::http::uri::PathAndQuery;
use bytes::BytesMut;

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

pub(super) fn normalize(mut req: Request) -> Request {
    // The common case: the path is already normal; nothing is allocated or rebuilt.
    let Some(plan) = plan(req.uri().path()) else {
        return req;
    };
    if let Some(uri) = rewritten(req.uri(), plan) {
        *req.uri_mut() = uri;
    }
    req
}

/// How a path is to be rewritten: its part to keep (trailing slashes dropped) and
/// whether to lower-case it. `None` when it is already normal.
#[derive(Clone, Copy)]
struct Plan<'a> {
    keep: &'a str,
    lower: bool,
}

fn plan(path: &str) -> Option<Plan<'_>> {
    let bytes = path.as_bytes();
    let trailing_slash = bytes.len() > 1 && bytes.ends_with(b"/");
    // The common case, decided without splitting: no trailing slash and no upper
    // case (no early exit, so that the compiler checks many bytes at once).
    let upper = bytes
        .iter()
        .fold(false, |any, b| any | b.is_ascii_uppercase());
    if !trailing_slash && !upper {
        return None;
    }
    let trimmed = if trailing_slash {
        path.trim_end_matches('/')
    } else {
        path
    };
    let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
    // cvpysdk's own spelling (`/commandcenter/api/Session`) is routed as it is;
    // checked before the path is split.
    let lower = upper && !vendor_spelled(trimmed) && {
        let first = trimmed
            .trim_start_matches('/')
            .split('/')
            .next()
            .unwrap_or("");
        COMMVAULT_FIRST_SEGMENTS
            .iter()
            .any(|s| s.eq_ignore_ascii_case(first))
    };
    (lower || trimmed.len() != path.len()).then_some(Plan {
        keep: trimmed,
        lower,
    })
}

/// A Commvault endpoint as the vendor spells it, at the root or under a base path
/// written in lower case: routed as it is.
fn vendor_spelled(path: &str) -> bool {
    let rest = PREFIXES
        .iter()
        .find_map(|p| path.strip_prefix(p))
        .unwrap_or(path);
    rest.strip_prefix('/')
        .is_some_and(|segment| VENDOR_SPELLINGS.contains(&segment))
}

/// `uri` with its path rewritten by `plan` and its query kept: one buffer, handed
/// to the new URI without a copy.
fn rewritten(uri: &Uri, plan: Plan<'_>) -> Option<Uri> {
    let query = uri.query();
    let mut buf = BytesMut::with_capacity(plan.keep.len() + query.map_or(0, |q| q.len() + 1));
    buf.extend_from_slice(plan.keep.as_bytes());
    if plan.lower {
        buf.make_ascii_lowercase();
    }
    if let Some(q) = query {
        buf.extend_from_slice(b"?");
        buf.extend_from_slice(q.as_bytes());
    }
    let pq = PathAndQuery::from_maybe_shared(buf.freeze()).ok()?;
    if uri.scheme().is_none() && uri.authority().is_none() {
        // Origin form (`GET /path HTTP/1.1`), what clients send.
        return Some(Uri::from(pq));
    }
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(pq);
    Uri::from_parts(parts).ok()
}

/// The rewritten path, or `None` when it is already normal.
#[cfg(test)]
fn normalized_path(path: &str) -> Option<String> {
    plan(path).map(|p| {
        if p.lower {
            p.keep.to_ascii_lowercase()
        } else {
            p.keep.to_string()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::{Uri, normalized_path, plan, rewritten};

    #[test]
    fn commvault_paths_lower_case_others_untouched() {
        assert_eq!(normalized_path("/LOGIN"), Some("/login".into()));
        // Vendor spellings are routed as sent (at the root or under a base path).
        assert_eq!(normalized_path("/Login"), None);
        assert_eq!(normalized_path("/commandcenter/api/Session"), None);
        assert_eq!(normalized_path("/webconsole/api/RenewLoginToken"), None);
        assert_eq!(
            normalized_path("/commandcenter/api/Session/"),
            Some("/commandcenter/api/Session".into())
        );
        assert_eq!(
            normalized_path("/CommandCenter/api/Session"),
            Some("/commandcenter/api/session".into())
        );
        assert_eq!(
            normalized_path("/commandcenter/api/User/5"),
            Some("/commandcenter/api/user/5".into())
        );
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

    #[test]
    fn rewritten_uris_keep_the_query_and_absolute_form() {
        let rewrite = |s: &str| {
            let uri: Uri = s.parse().unwrap();
            rewritten(&uri, plan(uri.path()).unwrap())
                .unwrap()
                .to_string()
        };
        assert_eq!(
            rewrite("/CommandCenter/API/Session?userId=7&X=Y"),
            "/commandcenter/api/session?userId=7&X=Y"
        );
        assert_eq!(rewrite("/api/session/"), "/api/session");
        assert_eq!(rewrite("/LOGIN/?a"), "/login?a");
        assert_eq!(rewrite("/Login/?a"), "/Login?a");
        assert_eq!(
            rewrite("http://host:8080/SESSION/?Q=1"),
            "http://host:8080/session?Q=1"
        );
    }
}
