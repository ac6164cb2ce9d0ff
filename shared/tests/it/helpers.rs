//! Test support: isolated namespaces on the real broker, and a TCP proxy the
//! test controls to cut the connection without touching the shared broker.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lapin::Connection;
use shared::settings::Settings;
use shared::topology::Topology;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Settings for the local services under a namespace no other test uses.
pub fn isolated_settings() -> Settings {
    Settings::local_defaults().with_namespace(format!("test-{}", uuid::Uuid::now_v7().simple()))
}

/// A declared topology in its own namespace, deleted when dropped (even
/// when the test panics).
pub struct IsolatedTopology {
    pub settings: Settings,
    pub topology: Topology,
}

impl IsolatedTopology {
    pub async fn declare() -> Self {
        Self::declare_with(isolated_settings()).await
    }

    pub async fn declare_with(settings: Settings) -> Self {
        let topology = Topology::new(&settings);
        let connection = connect(&settings).await;
        topology.declare(&connection).await.expect("declare topology");
        let _ = connection.close(200, "OK".into()).await;
        Self { settings, topology }
    }
}

impl Drop for IsolatedTopology {
    fn drop(&mut self) {
        let settings = self.settings.clone();
        let topology = self.topology.clone();
        // Drop cannot await; tear down on a thread with its own runtime.
        let teardown = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(connection) = shared::broker::connect(&settings, "test-teardown").await {
                        let _ = topology.delete(&connection).await;
                        let _ = connection.close(200, "OK".into()).await;
                    }
                });
            }
        });
        let _ = teardown.join();
    }
}

pub async fn connect(settings: &Settings) -> Connection {
    shared::broker::connect(settings, "test").await.expect("connect to the local RabbitMQ")
}

/// Polls `check` until it returns `Some` or `deadline` passes.
pub async fn eventually<T, F, Fut>(deadline: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A loopback TCP proxy to `upstream` that can cut every connection and
/// refuse new ones until restored, standing in for a network failure.
pub struct TcpProxy {
    pub address: SocketAddr,
    cut: watch::Sender<u64>,
    refusing: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let address = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(0u64);
        let refusing = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(accept_loop(listener, upstream, cut.clone(), refusing.clone()));
        Self { address, cut, refusing, task }
    }

    /// Drops every open connection and refuses new ones.
    pub fn cut(&self) {
        self.refusing.store(true, Ordering::SeqCst);
        self.cut.send_modify(|generation| *generation += 1);
    }

    /// Accepts and forwards connections again.
    pub fn restore(&self) {
        self.refusing.store(false, Ordering::SeqCst);
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
    refusing: Arc<AtomicBool>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if refusing.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let mut cut_signal = cut.subscribe();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else { return };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut_signal.changed() => {}
            }
        });
    }
}
