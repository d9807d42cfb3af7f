//! A TCP proxy on 127.0.0.1 that a test can cut and restore, to give sessiond a
//! store outage without stopping the shared database servers.
//!
//! Cut: every open connection is closed and new ones are closed as soon as they are
//! accepted, so clients see their connections fail (as when the server stops).
//! Stall: connections stay open but nothing is forwarded (a network partition: only
//! timeouts notice). Restore: traffic flows again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

pub struct Proxy {
    pub port: u16,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    cut: AtomicBool,
    stalled: watch::Sender<bool>,
    connections: Mutex<Vec<AbortHandle>>,
}

/// Copies one direction, holding data while the proxy is stalled.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut stalled: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if stalled.wait_for(|s| !*s).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards to 127.0.0.1:`upstream_port`.
    pub async fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let shared = Arc::new(Shared {
            cut: AtomicBool::new(false),
            stalled: watch::Sender::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let state = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                if state.cut.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let stalled = state.stalled.subscribe();
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, stalled.clone()) => {}
                        () = pump(server_read, client_write, stalled) => {}
                    }
                });
                let mut conns = state.connections.lock().unwrap();
                conns.retain(|c| !c.is_finished());
                conns.push(task.abort_handle());
            }
        });
        Proxy {
            port,
            shared,
            accept,
        }
    }

    /// Closes every open connection and refuses new ones until [`Proxy::restore`].
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        for c in self.shared.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Keeps connections open but forwards nothing until [`Proxy::restore`].
    pub fn stall(&self) {
        self.shared.stalled.send_replace(true);
    }

    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.shared.stalled.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
