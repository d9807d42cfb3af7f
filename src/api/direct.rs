//! The application as the server calls it: path normalization, then the
//! session-get routes served directly, then axum's router for everything else.
//!
//! Every request to a management API validates a session, so the session get of
//! each dialect (Commvault `GET Session`, vSphere `POST /rest/com/vmware/cis/session`,
//! `GET /api/session` and `POST /api`, native `GET /v1/session`) is looked up in a
//! short table before the router: a few string comparisons instead of the route
//! tree, the boxed per-route service the router clones for each request, the
//! matched-path extension and three nested response futures. A direct route's
//! handler takes the state and the whole request and is awaited in place: no
//! extractor futures, no boxed handler future (axum's `Handler::call` cost ~1,800
//! instructions per request, and boxing the handler's several-KiB future copied
//! it once more; see `bench/PROFILE.md`). The router serves the same handler for
//! that method and path through [`handler`], and a direct route is instrumented
//! like every route (`ops::instrumented`, labelled with its path); every other
//! method on those paths, and every other path, goes to the router.

use super::normalize::normalize;
use super::ops::{self, DirectLabel, RouteName};
use super::{AppState, commvault, native, vsphere};
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::response::Response;
use futures_util::future::Either;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

/// The handlers served before the router.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Get {
    /// Commvault `GET Session?userId=`.
    Commvault,
    /// vSphere legacy REST `POST /rest/com/vmware/cis/session` (create, `~action=get`).
    VsphereRest,
    /// vSphere `GET /api/session`.
    VsphereApi,
    /// vAPI JSON-RPC `POST /api`.
    JsonRpc,
    /// Native `GET /v1/session`.
    Native,
}

impl Get {
    /// Answers `req` with this route's handler.
    async fn call(self, st: AppState, req: Request) -> Result<Response, Infallible> {
        Ok(match self {
            Get::Commvault => commvault::sessions_of_user(st, req).await,
            Get::VsphereRest => vsphere::rest_post(st, req).await,
            Get::VsphereApi => vsphere::api_get(st, req).await,
            Get::JsonRpc => vsphere::json_rpc(st, req).await,
            Get::Native => native::current_session(st, req).await,
        })
    }
}

/// A handler of the direct form (the state and the whole request) as an axum
/// handler, for the router's route of the same method and path.
pub fn handler<F, Fut>(
    f: F,
) -> impl Fn(State<AppState>, Request) -> Fut + Clone + Send + Sync + 'static
where
    F: Fn(AppState, Request) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + Send,
{
    move |State(st), req| f(st, req)
}

/// One route served before the router: `get` for `method` on `path` (a path
/// without parameters, also the route's label in metrics and logs).
pub struct Direct {
    method: Method,
    label: Arc<DirectLabel>,
    get: Get,
}

impl Direct {
    pub fn new(method: Method, path: &str, get: Get) -> Self {
        Direct {
            method,
            label: Arc::new(DirectLabel::new(path)),
            get,
        }
    }
}

/// The whole HTTP application (see the module documentation): cheap to clone.
#[derive(Clone)]
pub struct App(Arc<Inner>);

struct Inner {
    direct: Vec<Direct>,
    router: Router,
    state: AppState,
}

impl App {
    pub fn new(direct: Vec<Direct>, router: Router, state: AppState) -> Self {
        App(Arc::new(Inner {
            direct,
            router,
            state,
        }))
    }

    fn find(&self, method: &Method, path: &str) -> Option<&Direct> {
        self.0
            .direct
            .iter()
            .find(|d| d.method == method && d.label.path() == path)
    }

    /// Answers one request.
    pub fn serve(
        &self,
        req: Request,
    ) -> impl Future<Output = Result<Response, Infallible>> + Send + 'static + use<> {
        use tower::Service;
        let req = normalize(req);
        let Some(direct) = self.find(req.method(), req.uri().path()) else {
            return Either::Right(self.0.router.clone().call(req));
        };
        let route = Some(RouteName::Direct(direct.label.clone()));
        let get = direct.get;
        let state = self.0.state.clone();
        let log_at_info = state.http.request_log;
        Either::Left(ops::instrumented(req, route, log_at_info, move |req| {
            get.call(state, req)
        }))
    }
}
