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
//!
//! **A wake-up during its own poll is served at once.** A connection's request body
//! is read by hyper only once the handler has asked for it: the handler's first
//! poll signals "want" (waking the connection's own task) and returns pending, and
//! hyper then ends its poll. Through tokio, that wake-up put the connection at the
//! back of its worker's run queue, behind every other ready connection, before the
//! body was read and the answer made: a JSON-RPC call (the one session get with a
//! body) waited a whole round of the queue (p90 at 64 connections 1.4–2.4 ms
//! against 0.6 ms for the bodiless REST get) and cost a second task poll. The
//! connection is now polled with a waker of its own ([`Relay`]) that notes a wake-up
//! made while the connection is being polled, and the connection is polled again
//! right away (at most [`REPOLLS`] times, then the wake-up goes to tokio as usual);
//! a wake-up from anywhere else goes to the task's waker at once.

use futures_util::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use pin_project_lite::pin_project;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
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
            relay: Relayed::new(),
        }
    }
}

/// Polls of a connection in a row that a wake-up during the poll may ask for
/// before the wake-up is left to tokio (hyper yields after a burst of pipelined
/// requests, and tokio's budget wakes a task it stops; both mean "let others run").
const REPOLLS: usize = 2;

/// The waker a connection is polled with (see the module documentation).
struct Relay {
    task: AtomicWaker,
    polling: AtomicBool,
    woken: AtomicBool,
}

/// A [`Relay`] and the waker made of it, for one connection.
struct Relayed {
    relay: Arc<Relay>,
    waker: Waker,
}

impl Relayed {
    fn new() -> Self {
        let relay = Arc::new(Relay {
            task: AtomicWaker::new(),
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        });
        let waker = Waker::from(Arc::clone(&relay));
        Relayed { relay, waker }
    }

    /// Polls `fut` for the task `cx` belongs to, again at once while it wakes
    /// itself during its poll (see the module documentation).
    fn poll<F: Future>(&self, mut fut: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let relay = &self.relay;
        relay.task.register(cx.waker());
        let mut relayed = Context::from_waker(&self.waker);
        for _ in 0..=REPOLLS {
            relay.woken.store(false, Ordering::SeqCst);
            relay.polling.store(true, Ordering::SeqCst);
            let polled = fut.as_mut().poll(&mut relayed);
            relay.polling.store(false, Ordering::SeqCst);
            if polled.is_ready() || !relay.woken.load(Ordering::SeqCst) {
                return polled;
            }
        }
        // Still waking itself: tokio polls it again after the others.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Wake for Relay {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted first, then the poller's state read; the poller clears `polling`
        // before it reads `woken`: one of the two always sees the other.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
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
        // The connection's own waker (see the module documentation).
        relay: Relayed,
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
        this.relay.poll(this.conn, cx)
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

    /// Counts the wake-ups of the task it stands for.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A future that wakes itself during each of its first `pending` polls.
    fn waking_itself(pending: usize) -> impl Future<Output = usize> {
        let mut polls = 0;
        std::future::poll_fn(move |cx| {
            polls += 1;
            if polls > pending {
                Poll::Ready(polls)
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
    }

    /// A wake-up during the poll is served by polling again at once, without a
    /// round through the task's waker; one that keeps coming goes to the task after
    /// `REPOLLS` more polls; one from elsewhere goes to the task at once.
    #[test]
    fn a_wake_up_during_the_poll_polls_again_at_once() {
        let count = Arc::new(Count::default());
        let task = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&task);
        let relayed = Relayed::new();

        let mut once = std::pin::pin!(waking_itself(1));
        assert_eq!(relayed.poll(once.as_mut(), &mut cx), Poll::Ready(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 0);

        let mut always = std::pin::pin!(waking_itself(usize::MAX));
        assert_eq!(relayed.poll(always.as_mut(), &mut cx), Poll::Pending);
        assert_eq!(count.0.load(Ordering::SeqCst), 1);

        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut later = std::pin::pin!(rx);
        assert!(relayed.poll(later.as_mut(), &mut cx).is_pending());
        std::thread::spawn(move || tx.send(()))
            .join()
            .unwrap()
            .unwrap();
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(relayed.poll(later.as_mut(), &mut cx).is_ready());
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
