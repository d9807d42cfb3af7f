//! The web console's session cookie and its CSRF tokens, shared by `/ui` and `/v1`.
//!
//! The cookie holds the session secret itself (the same token other dialects carry),
//! `HttpOnly; SameSite=Strict; Path=/`, and `Secure` under TLS. `Path=/` lets the
//! console's `EventSource` reach `/v1/events` with it.
//!
//! CSRF: every state-changing request authenticated by the cookie must also present
//! the session's CSRF token (a form field on `/ui`, the `X-CSRF-Token` header on
//! `/v1`). The token is derived from the session secret (a domain-separated
//! SHA-256), so it needs no server-side state, works on every instance of a
//! cluster, and cannot be computed without the secret the cookie hides from
//! scripts. Before sign-in, the login form uses a double-submit cookie instead.

use axum::http::{HeaderMap, HeaderValue, header};
use cookie::{Cookie, SameSite};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The cookie holding the console's session secret.
pub const SESSION_COOKIE: &str = "sessiond_console";
/// The double-submit cookie of the sign-in form.
pub const LOGIN_CSRF_COOKIE: &str = "sessiond_login_csrf";
/// The header carrying the CSRF token on cookie-authenticated `/v1` requests.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The CSRF token of the session whose secret is `token`.
pub fn csrf_for(token: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"sessiond console csrf v1\0");
    h.update(token.trim().to_ascii_lowercase().as_bytes());
    hex::encode(h.finalize())
}

/// Whether `presented` is the CSRF token of the session `token` (constant time).
pub fn csrf_matches(token: &str, presented: &str) -> bool {
    equal(csrf_for(token).as_bytes(), presented.trim().as_bytes())
}

/// Constant-time equality of two secrets.
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// The value of the request cookie `name`, if sent.
pub fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_string())
        .filter(|v| !v.is_empty())
}

fn set_cookie(name: &str, value: String, path: &str, secure: bool, clear: bool) -> HeaderValue {
    let mut c = Cookie::build((name.to_string(), value))
        .http_only(true)
        .same_site(SameSite::Strict)
        .path(path.to_string())
        .secure(secure)
        .build();
    if clear {
        c.make_removal();
    }
    // Names and values are ASCII we chose (hex), so this cannot fail.
    HeaderValue::from_str(&c.to_string()).unwrap_or(HeaderValue::from_static(""))
}

/// `Set-Cookie` for a new console session.
pub fn session_cookie(token: &str, secure: bool) -> HeaderValue {
    set_cookie(SESSION_COOKIE, token.to_string(), "/", secure, false)
}

/// `Set-Cookie` removing the console session cookie.
pub fn clear_session_cookie(secure: bool) -> HeaderValue {
    set_cookie(SESSION_COOKIE, String::new(), "/", secure, true)
}

/// `Set-Cookie` for the sign-in form's double-submit token.
pub fn login_csrf_cookie(value: &str, secure: bool) -> HeaderValue {
    set_cookie(LOGIN_CSRF_COOKIE, value.to_string(), "/ui", secure, false)
}

/// A fresh random value (hex of 128 bits) for the sign-in form.
pub fn random_hex() -> Option<String> {
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).ok()?;
    Some(hex::encode(raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_are_per_session_and_checked_exactly() {
        let a = "ab".repeat(32);
        let b = "cd".repeat(32);
        assert_ne!(csrf_for(&a), csrf_for(&b));
        assert_ne!(csrf_for(&a), a);
        assert!(csrf_matches(&a, &csrf_for(&a)));
        assert!(csrf_matches(&a.to_uppercase(), &csrf_for(&a)));
        assert!(!csrf_matches(&a, &csrf_for(&b)));
        assert!(!csrf_matches(&a, ""));
        assert!(!csrf_matches(&a, &csrf_for(&a)[..63]));
    }

    #[test]
    fn cookies_carry_the_agreed_flags() {
        let plain = session_cookie("t0k", false);
        let plain = plain.to_str().unwrap();
        assert!(plain.starts_with("sessiond_console=t0k"), "{plain}");
        for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(plain.contains(flag), "{plain}");
        }
        assert!(!plain.contains("Secure"), "{plain}");
        let tls = session_cookie("t0k", true);
        assert!(tls.to_str().unwrap().contains("Secure"));
        let gone = clear_session_cookie(false);
        assert!(gone.to_str().unwrap().contains("Max-Age=0"), "{gone:?}");
    }

    #[test]
    fn request_cookies_are_found_by_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; sessiond_console=xyz; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h, SESSION_COOKIE).as_deref(), Some("xyz"));
        assert_eq!(cookie_value(&h, "missing"), None);
    }
}
