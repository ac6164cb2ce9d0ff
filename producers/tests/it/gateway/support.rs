//! A gateway on a free loopback port over an isolated namespace and a
//! throw-away database, with helpers to issue keys and build events.

use std::net::SocketAddr;
use std::time::Duration;

use producers::gateway::api_keys::{self, NewApiKey};
use producers::gateway::grants::Grants;
use producers::gateway::{GatewayConfig, GatewayState, serve};
use secrecy::ExposeSecret;
use shared::events::catalog::{OrderLine, OrderPlaced};
use shared::events::{Event, EventPayload};
use shared::groups::ConsumerGroup;
use shared::publish::Publisher;
use shared::testing::{IsolatedTopology, TcpProxy, TestDatabase, connect};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A running gateway; stopped, and its namespace and database removed, on drop.
pub struct Gateway {
    pub base: String,
    pub client: reqwest::Client,
    pub isolated: IsolatedTopology,
    pub database: TestDatabase,
    /// Between the gateway and the broker or database, when one is to be cut.
    pub proxy: Option<TcpProxy>,
    pub shutdown: CancellationToken,
    pub served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(GatewayConfig::default(), None).await
    }

    pub async fn with_config(config: GatewayConfig) -> Self {
        Self::start_with(config, None).await
    }

    /// The gateway's broker connection goes through a proxy the test cuts.
    pub async fn behind_proxy() -> Self {
        Self::behind_proxy_with(GatewayConfig::default()).await
    }

    /// [`Gateway::behind_proxy`] with `config`.
    pub async fn behind_proxy_with(config: GatewayConfig) -> Self {
        Self::start_with(config, Some(Cut::Broker)).await
    }

    /// The gateway's database connections go through a proxy the test
    /// cuts; keys are not cached, so every request reads the key store.
    pub async fn with_database_behind_proxy() -> Self {
        let config = GatewayConfig {
            key_cache_ttl: Duration::ZERO,
            ..GatewayConfig::default()
        };
        Self::start_with(config, Some(Cut::Database)).await
    }

    async fn start_with(mut config: GatewayConfig, cut: Option<Cut>) -> Self {
        let isolated = IsolatedTopology::declare().await;
        let database = TestDatabase::create_with(isolated.settings.clone()).await;
        let mut settings = database.settings.clone();
        settings.publish.timeout = Duration::from_secs(2);
        let mut pool = database.pool.clone();
        let proxy = match cut {
            None => None,
            Some(Cut::Broker) => {
                let (proxy, url) = TcpProxy::in_front_of(settings.amqp_url.expose_secret()).await;
                settings.amqp_url = url.into();
                Some(proxy)
            }
            Some(Cut::Database) => {
                let (proxy, url) =
                    TcpProxy::in_front_of(settings.database_url.expose_secret()).await;
                let mut proxied = settings.clone();
                proxied.database_url = url.into();
                pool = shared::database::connect(&proxied, 4, false).await.unwrap();
                Some(proxy)
            }
        };
        let publisher = Publisher::new(&settings, isolated.topology.events_exchange(), "gateway");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        config.listen = address;
        let state = GatewayState::new(settings, config, pool, publisher);
        let shutdown = CancellationToken::new();
        let served = tokio::spawn(serve(listener, state, shutdown.clone()));
        Self {
            base: format!("http://{address}"),
            client: reqwest::Client::new(),
            isolated,
            database,
            proxy,
            shutdown,
            served: Some(served),
        }
    }

    /// Issues a key for `types` from `sources`.
    pub async fn key(&self, types: &[&str], sources: &[&str], rate: u32, burst: u32) -> String {
        let grants = Grants::new(
            types.iter().map(|t| t.to_string()).collect(),
            sources.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap();
        let new = NewApiKey {
            producer: "test".into(),
            grants,
            rate_per_second: rate,
            burst,
        };
        api_keys::create(&self.database.pool, new).await.unwrap().1
    }

    /// A key that may publish `order.placed` from `/checkout`, generously limited.
    pub async fn checkout_key(&self) -> String {
        self.key(&["order.placed"], &["/checkout"], 10_000, 10_000)
            .await
    }

    pub fn post(&self, key: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/events", self.base))
            .bearer_auth(key)
    }

    /// Posts `events` as one batch.
    pub async fn post_batch(&self, key: &str, events: &[Event]) -> reqwest::Response {
        let body: Vec<_> = events.iter().map(Event::to_envelope).collect();
        self.post(key)
            .header("content-type", "application/cloudevents-batch+json")
            .body(serde_json::to_vec(&body).unwrap())
            .send()
            .await
            .unwrap()
    }

    /// Posts one event in structured mode.
    pub async fn post_structured(&self, key: &str, event: &Event) -> reqwest::Response {
        self.post(key)
            .header("content-type", "application/cloudevents+json")
            .body(event.to_json_bytes())
            .send()
            .await
            .unwrap()
    }

    /// Messages ready on `group`'s work queue, once the count is stable.
    pub async fn queued(&self, group: ConsumerGroup) -> u32 {
        let connection = connect(&self.isolated.settings).await;
        let mut last = None;
        loop {
            let depths = self.isolated.topology.depths(&connection).await.unwrap();
            let now = depths
                .into_iter()
                .find(|depth| depth.group == group)
                .unwrap()
                .work;
            if last == Some(now) {
                let _ = connection.close(200, "OK".into()).await;
                return now;
            }
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Which connection a test cuts.
#[derive(Clone, Copy)]
enum Cut {
    Broker,
    Database,
}

/// A valid `order.placed` from `source`.
pub fn order_placed(source: &str) -> Event {
    Event::new(
        source,
        EventPayload::OrderPlaced(OrderPlaced {
            order_id: Uuid::now_v7(),
            customer_id: Uuid::now_v7(),
            currency: "EUR".into(),
            lines: vec![OrderLine {
                sku: "SKU-00001".into(),
                category: "books".into(),
                quantity: 1,
                unit_price_cents: 1_999,
            }],
        }),
    )
}

/// An `order.cancelled` from `source`, for a new order id.
pub fn order_cancelled(source: &str) -> Event {
    use shared::events::catalog::OrderCancelled;
    Event::new(
        source,
        EventPayload::OrderCancelled(OrderCancelled {
            order_id: Uuid::now_v7(),
            reason: "changed their mind".into(),
        }),
    )
}

/// Removes (`bind == false`) or restores every binding of `routing_key` on
/// the events exchange: a topology mistake, then its fix.
pub async fn bind_routing_key(isolated: &IsolatedTopology, routing_key: &str, bind: bool) {
    use lapin::options::QueueBindOptions;
    use lapin::types::FieldTable;
    let connection = connect(&isolated.settings).await;
    let channel = connection.create_channel().await.unwrap();
    let events = isolated.topology.events_exchange();
    for binding in &isolated.topology.bindings {
        if binding.routing_key != routing_key || binding.exchange != events {
            continue;
        }
        let (queue, exchange) = (binding.queue.as_str(), binding.exchange.as_str());
        if bind {
            channel
                .queue_bind(
                    queue.into(),
                    exchange.into(),
                    routing_key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        } else {
            channel
                .queue_unbind(
                    queue.into(),
                    exchange.into(),
                    routing_key.into(),
                    FieldTable::default(),
                )
                .await
                .unwrap();
        }
    }
    let _ = connection.close(200, "OK".into()).await;
}

/// The `status` of each event in an accepted request's body, in order.
pub fn statuses(body: &serde_json::Value) -> Vec<&str> {
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["status"].as_str().unwrap())
        .collect()
}

/// The JSON body of a response.
pub async fn json(response: reqwest::Response) -> serde_json::Value {
    response.json().await.unwrap()
}
