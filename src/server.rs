//! Wiring: configuration → store → service → HTTP, and the serve loop.
//!
//! [`run`] takes a bound listener, so tests bind port 0 and read the real port.

use crate::api::{self, AppState};
use crate::clock::Clock;
use crate::config::Config;
use crate::service::{Passwords, Service, ServiceConfig};
use crate::store::Store;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Builds the service and the HTTP state from a configuration and an opened store.
pub fn build(
    config: &Config,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<AppState> {
    let passwords = Passwords::new(config.password_hash)?;
    let service = Service::new(
        store,
        clock,
        ServiceConfig {
            session: config.session.clone(),
            session_limit: config.limits.session_limit(),
        },
        passwords,
    );
    Ok(AppState {
        service,
        http: Arc::new(config.http.clone()),
        dialects: Arc::new(config.dialects.clone()),
    })
}

/// Serves until `shutdown` completes: in-flight requests finish, then pending
/// last-access updates are written.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let stop_background = CancellationToken::new();
    let background = state.service.spawn_background(stop_background.clone());
    let app = api::app(state);
    let served =
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .with_graceful_shutdown(shutdown)
        .await;
    stop_background.cancel();
    if let Err(e) = background.await {
        tracing::error!(error = %e, "background task failed");
    }
    served.map_err(Into::into)
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is called
/// (not when the future is first polled), so a signal that arrives between start-up
/// and serving is not fatal: call it before announcing the listening address.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (interrupt, term) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |s: std::io::Result<tokio::signal::unix::Signal>, name: &'static str| async move {
                match s {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for {name}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(interrupt, "Ctrl-C") => {},
                () = wait(term, "SIGTERM") => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}
