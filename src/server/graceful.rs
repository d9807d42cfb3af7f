//! Graceful shutdown of the open connections, cheap on every wake-up.
//!
//! hyper-util's `GracefulShutdown` polls a `watch::Receiver::changed` future on
//! every wake-up of every connection, and a pending `Notified` takes the lock of the
//! one `Notify` all connections share to refresh its waker on each poll: ~370
//! instructions per session get (callgrind) and a lock both cores' connections
//! contend for (`bench/PROFILE.md`). Here a connection polls that future only when
//! it has not registered its task's waker yet, or once shutdown has begun (a flag
//! set before the notification is sent); on every other wake-up it reads one atomic
//! that does not change until shutdown. The connections are hyper-util's
//! (`GracefulConnection`), told to finish by their own `graceful_shutdown`.

use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use tokio::sync::watch;

/// Tells watched connections to finish, and waits until they have.
pub struct Shutdown {
    tx: watch::Sender<()>,
    begun: Arc<AtomicBool>,
}

impl Shutdown {
    pub fn new() -> Self {
        Shutdown {
            tx: watch::channel(()).0,
            begun: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `conn`, told to finish gracefully once [`Shutdown::shutdown`] is called.
    pub fn watch<C: GracefulConnection>(&self, conn: C) -> Watched<C> {
        self.watcher().watch(conn)
    }

    /// A watcher for a connection not made yet (a TLS handshake in progress):
    /// counted from now, so that shutdown waits for it too.
    pub fn watcher(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
            begun: Arc::clone(&self.begun),
        }
    }

    /// Tells every watched connection to finish its requests and close, then
    /// waits until all of them have ended.
    pub async fn shutdown(self) {
        self.begun.store(true, Ordering::Release);
        let _ = self.tx.send(());
        self.tx.closed().await;
    }
}

/// See [`Shutdown::watcher`].
pub struct Watcher {
    rx: watch::Receiver<()>,
    begun: Arc<AtomicBool>,
}

impl Watcher {
    pub fn watch<C: GracefulConnection>(self, conn: C) -> Watched<C> {
        let Watcher { mut rx, begun } = self;
        Watched {
            conn,
            cancel: Box::pin(async move {
                let _ = rx.changed().await;
                rx
            }),
            guard: None,
            registered: None,
            begun,
        }
    }
}

type Cancel = Pin<Box<dyn Future<Output = watch::Receiver<()>> + Send>>;

pin_project! {
    /// A connection watched for shutdown; holds a receiver (counted by
    /// [`Shutdown::shutdown`]) until it ends.
    pub struct Watched<C> {
        #[pin]
        conn: C,
        cancel: Cancel,
        // The receiver, once shutdown has been seen (the connection is finishing).
        guard: Option<watch::Receiver<()>>,
        // The waker `cancel` last registered.
        registered: Option<Waker>,
        begun: Arc<AtomicBool>,
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.guard.is_none() {
            let registered = this
                .registered
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()));
            if !registered || this.begun.load(Ordering::Acquire) {
                match this.cancel.as_mut().poll(cx) {
                    Poll::Ready(rx) => {
                        *this.guard = Some(rx);
                        *this.registered = None;
                        this.conn.as_mut().graceful_shutdown();
                    }
                    Poll::Pending => *this.registered = Some(cx.waker().clone()),
                }
            }
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One accepted connection watched by `shutdown`, not yet polled, and its
    /// client end.
    async fn accepted(
        shutdown: &Shutdown,
    ) -> (
        tokio::net::TcpStream,
        impl Future<Output = ()> + Send + 'static,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let service = hyper::service::service_fn(|_req| async {
            Ok::<_, std::convert::Infallible>(axum::http::Response::new(Body::from("ok")))
        });
        let conn = auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let watched = shutdown.watch(conn);
        (client, async move {
            let _ = watched.await;
        })
    }

    /// [`accepted`], served on a task of its own.
    async fn served(shutdown: &Shutdown) -> (tokio::net::TcpStream, tokio::task::JoinHandle<()>) {
        let (client, conn) = accepted(shutdown).await;
        (client, tokio::spawn(conn))
    }

    async fn get(client: &mut tokio::net::TcpStream) -> String {
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = client.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[tokio::test]
    async fn idle_connections_close_and_shutdown_waits_for_them() {
        let shutdown = Shutdown::new();
        let (mut a, task_a) = served(&shutdown).await;
        let (mut b, task_b) = served(&shutdown).await;
        // Several requests each: every wake-up after the first reads the flag only.
        for _ in 0..3 {
            assert!(get(&mut a).await.starts_with("HTTP/1.1 200"));
            assert!(get(&mut b).await.starts_with("HTTP/1.1 200"));
        }
        tokio::time::timeout(Duration::from_secs(5), shutdown.shutdown())
            .await
            .expect("both idle connections closed");
        task_a.await.unwrap();
        task_b.await.unwrap();
        let mut rest = Vec::new();
        assert_eq!(a.read_to_end(&mut rest).await.unwrap(), 0, "closed");
    }

    #[tokio::test]
    async fn shutdown_waits_for_a_connection_until_it_ends() {
        let shutdown = Shutdown::new();
        let (mut client, task) = served(&shutdown).await;
        assert!(get(&mut client).await.starts_with("HTTP/1.1 200"));
        // A second watched connection that has not been polled yet: it still
        // counts, and is told to finish on its first poll.
        let (_late_client, late) = accepted(&shutdown).await;
        let mut done = tokio::spawn(shutdown.shutdown());
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut done)
                .await
                .is_err(),
            "the unpolled connection still holds it"
        );
        late.await;
        tokio::time::timeout(Duration::from_secs(5), &mut done)
            .await
            .expect("all connections ended")
            .unwrap();
        task.await.unwrap();
    }
}
