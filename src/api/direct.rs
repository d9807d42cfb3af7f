//! The application as the server calls it: path normalization, then the
//! session-get routes served directly, then axum's router for everything else.
//!
//! Every request to a management API validates a session, so the session get of
//! each dialect (Commvault `GET Session`, vSphere `POST /rest/com/vmware/cis/session`,
//! `GET /api/session` and `POST /api`, native `GET /v1/session`) is looked up in a
//! short table before the router: a few string comparisons instead of the route
//! tree, the boxed per-route service the router clones for each request, the
//! matched-path extension and three nested response futures (see
//! `bench/PROFILE.md`). A direct route calls the same handler the router has for
//! that method and path, through axum's own extraction (`Handler::call`), and is
//! instrumented like every route (`ops::instrumented`, labelled with its path);
//! every other method on those paths, and every other path, goes to the router.

use super::AppState;
use super::normalize::normalize;
use super::ops::{self, InstrumentFuture, RouteName};
use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::Method;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures_util::FutureExt;
use futures_util::future::{Either, Map};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// What a handler called through `Handler::call` returns.
type HandlerFuture = Pin<Box<dyn Future<Output = Response> + Send>>;

type Call = dyn Fn(Request, AppState) -> HandlerFuture + Send + Sync;

/// One route served before the router: `handler` for `method` on `path` (a path
/// without parameters, also the route's label in metrics and logs).
pub struct Direct {
    method: Method,
    path: Arc<str>,
    call: Box<Call>,
}

impl Direct {
    pub fn new<H, T>(method: Method, path: &str, handler: H) -> Self
    where
        H: Handler<T, AppState, Future = HandlerFuture> + Sync,
        T: 'static,
    {
        Direct {
            method,
            path: path.into(),
            call: Box::new(move |req, state| handler.clone().call(req, state)),
        }
    }
}

/// The whole HTTP application (see the module documentation).
#[derive(Clone)]
pub struct App {
    direct: Arc<[Direct]>,
    router: Router,
    state: AppState,
}

impl App {
    pub fn new(direct: Vec<Direct>, router: Router, state: AppState) -> Self {
        App {
            direct: direct.into(),
            router,
            state,
        }
    }

    fn find(&self, method: &Method, path: &str) -> Option<&Direct> {
        self.direct
            .iter()
            .find(|d| d.method == method && *d.path == *path)
    }
}

type DirectFuture = Map<HandlerFuture, fn(Response) -> Result<Response, Infallible>>;

impl tower::Service<Request> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Either<InstrumentFuture<DirectFuture>, RouteFuture<Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The router is always ready, and so is a direct route.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let req = normalize(req);
        let Some(direct) = self.find(req.method(), req.uri().path()) else {
            return Either::Right(self.router.call(req));
        };
        let route = Some(RouteName::Direct(direct.path.clone()));
        let state = self.state.clone();
        let log_at_info = state.http.request_log;
        Either::Left(ops::instrumented(req, route, log_at_info, |req| {
            (direct.call)(req, state).map(Ok as fn(Response) -> Result<Response, Infallible>)
        }))
    }
}
