//! The OpenAPI document of `/v1`, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types. `docs/openapi.json` holds a copy that a test
//! keeps equal to this (regenerate with `cargo run -- openapi > docs/openapi.json`).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sessiond native API",
        description = "Sessions, users, roles and the audit trail of sessiond. \
            Authenticate with `Authorization: Bearer <token>` from `POST /v1/login`. \
            Errors are `{\"error\":{\"code\",\"message\"}}`; lists are cursor-paginated \
            (`limit`, `cursor`, answered with `next_cursor`). \
            The web console's session cookie is accepted too; with it, any method but \
            GET and HEAD needs the session's CSRF token in `X-CSRF-Token`. \
            `GET /v1/events` streams live events (see its description and docs/events.md)."
    ),
    paths(
        super::openapi_document,
        super::login,
        super::logout,
        super::current_session,
        super::list_sessions,
        super::get_session,
        super::delete_session,
        super::revoke_sessions,
        super::list_users,
        super::create_user,
        super::get_user,
        super::update_user,
        super::delete_user,
        super::set_password,
        super::roles,
        super::audit,
        super::events,
    ),
    components(schemas(super::wire::StateParam)),
    modifiers(&BearerScheme),
    security(("bearer" = [])),
    tags(
        (name = "session", description = "Sign in and out; the current session"),
        (name = "sessions", description = "Listing and ending sessions"),
        (name = "users", description = "Users and roles"),
        (name = "audit", description = "The audit trail"),
        (name = "events", description = "Live events (server-sent events, per instance)"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("64 hex digits")
                    .build(),
            ),
        );
    }
}

/// The document as served at `/v1/openapi.json` and committed as `docs/openapi.json`.
pub fn document() -> String {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let mut text = ApiDoc::openapi()
            .to_pretty_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        text.push('\n');
        text
    })
    .clone()
}
