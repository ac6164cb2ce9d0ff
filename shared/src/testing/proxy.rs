//! A loopback TCP proxy that a test controls, to cut a connection without
//! touching the shared broker or database.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A loopback TCP proxy to `upstream` that can cut every connection and
/// refuse new ones until restored, or stall them (bytes held, sockets
/// open: a peer that stopped answering), standing in for a network failure.
pub struct TcpProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    cut: watch::Sender<u64>,
    stalled: watch::Sender<bool>,
    /// Raised by [`TcpProxy::black_hole`]: connections accepted before
    /// hold their bytes for good.
    holes: watch::Sender<u64>,
    refusing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(0u64);
        let (stalled, _) = watch::channel(false);
        let (holes, _) = watch::channel(0u64);
        let refusing = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(accept_loop(
            listener,
            upstream,
            cut.clone(),
            (stalled.clone(), holes.clone()),
            refusing.clone(),
        ));
        Self {
            address,
            cut,
            stalled,
            holes,
            refusing,
            task,
        }
    }

    /// A proxy in front of the host and port of `url` (`amqp://…` or
    /// `postgres://…`), and `url` rewritten to go through it (credentials,
    /// path and query kept).
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
        let (credentials, rest) = rest.rsplit_once('@').unwrap_or(("", rest));
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (host_port, tail) = rest.split_at(split);
        let upstream = tokio::net::lookup_host(host_port)
            .await
            .expect("resolve the upstream")
            .next()
            .expect("an upstream address");
        let proxy = Self::start(upstream).await;
        let at = if credentials.is_empty() { "" } else { "@" };
        let rewritten = format!("{scheme}://{credentials}{at}{}{tail}", proxy.address);
        (proxy, rewritten)
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Accepts and forwards connections again (and ends a stall).
    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
        self.stalled.send_replace(false);
    }

    /// Holds every byte in both directions, connections left open, until
    /// [`TcpProxy::restore`]: the peer seems to hang.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Every connection open now holds its bytes in both directions for
    /// good (until [`TcpProxy::cut`]), while new ones flow: a peer gone
    /// silent without a reset (a failover, an expired NAT flow), with the
    /// service itself reachable again.
    pub fn black_hole(&self) {
        self.holes.send_modify(|generation| *generation += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    cut: watch::Sender<u64>,
    (stalled, holes): (watch::Sender<bool>, watch::Sender<u64>),
    refusing: Arc<AtomicBool>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut cut_signal = cut.subscribe();
        let born = *holes.borrow();
        let upward = Held {
            stalled: stalled.subscribe(),
            holes: holes.subscribe(),
            born,
        };
        let downward = Held {
            stalled: stalled.subscribe(),
            holes: holes.subscribe(),
            born,
        };
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                () = pipe(client_read, server_write, upward) => {}
                () = pipe(server_read, client_write, downward) => {}
                _ = cut_signal.changed() => {}
            }
        });
    }
}

/// When one direction of a connection holds what it read.
struct Held {
    stalled: watch::Receiver<bool>,
    holes: watch::Receiver<u64>,
    /// The black-hole generation the connection was accepted in.
    born: u64,
}

/// Copies `from` to `to`, holding what it read while the proxy is stalled,
/// and for good once the connection is black-holed.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    Held {
        mut stalled,
        holes,
        born,
    }: Held,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(read) => read,
        };
        if stalled.wait_for(|stalled| !*stalled).await.is_err() {
            return;
        }
        if *holes.borrow() > born {
            // Until the connection is cut or the proxy dropped.
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}
