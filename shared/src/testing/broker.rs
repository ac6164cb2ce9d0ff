//! Isolated namespaces on the real broker.

use std::time::Duration;

use lapin::Connection;

use crate::settings::Settings;
use crate::topology::Topology;

/// Settings for the local services (or `AMQP_URL` / `DATABASE_URL`) under a namespace no other test uses.
pub fn isolated_settings() -> Settings {
    super::environment_settings().with_namespace(format!("test-{}", uuid::Uuid::now_v7().simple()))
}

/// A declared topology in its own namespace, deleted when dropped (even
/// when the test panics).
pub struct IsolatedTopology {
    /// Settings carrying the unique namespace.
    pub settings: Settings,
    /// The declared topology.
    pub topology: Topology,
}

impl IsolatedTopology {
    /// Declares the topology in a fresh namespace.
    pub async fn declare() -> Self {
        Self::declare_with(isolated_settings()).await
    }

    /// Declares the topology of `settings`.
    pub async fn declare_with(settings: Settings) -> Self {
        let topology = Topology::new(&settings);
        let connection = connect(&settings).await;
        topology
            .declare(&connection)
            .await
            .expect("declare topology");
        let _ = connection.close(200, "OK".into()).await;
        Self { settings, topology }
    }

    /// A connected publisher to this namespace's events exchange.
    pub async fn publisher(&self) -> crate::publish::Publisher {
        crate::publish::Publisher::connect(&self.settings, self.topology.events_exchange(), "test")
            .await
            .expect("publisher connects")
    }
}

impl Drop for IsolatedTopology {
    fn drop(&mut self) {
        let settings = self.settings.clone();
        let topology = self.topology.clone();
        // Drop cannot await; tear down on a thread with its own runtime.
        let teardown = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(connection) = crate::broker::connect(&settings, "test-teardown").await
                    {
                        let _ = topology.delete(&connection).await;
                        let _ = connection.close(200, "OK".into()).await;
                    }
                });
            }
        });
        let _ = teardown.join();
    }
}

/// A broker connection for test assertions.
pub async fn connect(settings: &Settings) -> Connection {
    crate::broker::connect(settings, "test")
        .await
        .expect("connect to the local RabbitMQ")
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
