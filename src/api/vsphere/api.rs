//! The vSphere 7+ REST form: `/api/session`.
//!
//! - `POST` with `Authorization: Basic` creates a session: 201 with the id as a bare
//!   JSON string (no cookie: these clients send the `vmware-api-session-id` header).
//! - `GET` answers `{"user","created_time","last_accessed_time"}` and updates the
//!   last access.
//! - `DELETE` ends the session: 204.
//!
//! Errors are unwrapped: `{"error_type":"UNAUTHENTICATED","messages":[...]}`.

use super::error::{RestError, VsError};
use super::{authenticate, basic_credentials, body_bytes, login, session_id_header, session_info};
use crate::api::json_text::JsonText;
use crate::api::{AppState, ClientAddr};
use crate::api::{Json, LimitedBytes, limited_body};
use crate::domain::{ConsoleType, Dialect};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// `POST /api/session`.
pub async fn create(
    State(st): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, RestError> {
    async {
        body_bytes(body)?;
        let creds = basic_credentials(&headers)?;
        let out = login(&st, creds, ConsoleType::VsphereApi, &headers, addr).await?;
        Ok((StatusCode::CREATED, Json(out.token.to_hex())).into_response())
    }
    .await
    .map_err(VsError::api)
}

/// `GET /api/session` (served before the router, `api::direct`).
pub async fn get(st: AppState, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let answer = async {
        body_bytes(limited_body(body, &st).await)?;
        let caller = authenticate(&st, session_id_header(&parts.headers)?).await?;
        let info = session_info(&caller, &st.dialects.vsphere_domain);
        let mut out = JsonText::new();
        info.write_json(&mut out);
        Ok(out.answer(crate::api::APPLICATION_JSON))
    };
    answer.await.map_err(VsError::api).into_response()
}

/// `DELETE /api/session`.
pub async fn delete(
    State(st): State<AppState>,
    addr: ClientAddr,
    headers: HeaderMap,
    LimitedBytes(body): LimitedBytes,
) -> Result<Response, RestError> {
    async {
        body_bytes(body)?;
        let caller = authenticate(&st, session_id_header(&headers)?).await?;
        st.service
            .logout(&caller, &addr.origin(Dialect::Vsphere))
            .await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    }
    .await
    .map_err(VsError::api)
}

/// Any other path or method under `/api` (and methods other than `POST` on `/api`).
pub async fn no_operation(method: Method, uri: Uri) -> RestError {
    let path: String = uri.path().chars().take(200).collect();
    VsError::NoOperation(format!("{method} {path}")).api()
}
