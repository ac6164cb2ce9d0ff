//! Where planned items go: the gateway over HTTP (batches, with retries on
//! 429 and 503), the broker over AMQP (confirms), or the outbox (one
//! transaction per batch). Each sender reports per item.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use shared::events::Event;
use shared::publish::{OutgoingMessage, Publisher};
use shared::retry::RetryPolicy;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::plan::Item;
use crate::gateway::cloudevents;

/// What became of one item.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Safely in the broker (or the outbox), after `latency`.
    Accepted {
        /// The event's id.
        id: uuid::Uuid,
        /// Its type.
        event_type: shared::events::EventType,
        /// Send → confirm (or commit).
        latency: Duration,
    },
    /// An invalid item was refused, as it should be.
    Refused,
    /// A valid item was refused, or an invalid one accepted, or it could
    /// not be sent: a failure of the run.
    Failed(String),
}

/// The gateway as a client sees it.
#[derive(Clone)]
pub struct GatewayClient {
    client: reqwest::Client,
    events_url: String,
    api_key: String,
}

impl GatewayClient {
    /// A client for the gateway at `base_url` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base_url: &str, api_key: String) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            events_url: format!("{}/events", base_url.trim_end_matches('/')),
            api_key,
        }
    }

    /// Waits until the gateway answers `/readyz` with 200, at most `patience`.
    pub async fn wait_until_ready(&self, patience: Duration) -> bool {
        let url = self.events_url.replace("/events", "/readyz");
        let until = Instant::now() + patience;
        while Instant::now() < until {
            if let Ok(response) = self.client.get(&url).send().await
                && response.status().is_success()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    }

    /// Posts `items`: valid ones as one batch, each invalid one alone (a
    /// batch is all or nothing, so one bad event would refuse the rest).
    /// Retries 429 and 503 after `Retry-After` until `stop`.
    pub async fn send(&self, items: Vec<Item>, stop: &CancellationToken) -> Vec<Outcome> {
        let mut outcomes = Vec::with_capacity(items.len());
        let mut valid = Vec::new();
        for item in items {
            match item {
                Item::Valid(event) => valid.push(*event),
                Item::Invalid { bytes, .. } => {
                    let answer = self.post(bytes, cloudevents::STRUCTURED, stop).await;
                    outcomes.push(match answer {
                        Ok((StatusCode::BAD_REQUEST, _)) => Outcome::Refused,
                        Ok((status, _)) => {
                            Outcome::Failed(format!("an invalid event was answered {status}"))
                        }
                        Err(error) => Outcome::Failed(error),
                    });
                }
            }
        }
        if valid.is_empty() {
            return outcomes;
        }
        let body: Vec<_> = valid.iter().map(Event::to_envelope).collect();
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let started = Instant::now();
        match self.post(body, cloudevents::BATCH, stop).await {
            Ok((StatusCode::ACCEPTED, _)) => {
                let latency = started.elapsed();
                outcomes.extend(valid.iter().map(|event| accepted(event, latency)));
            }
            Ok((status, text)) => outcomes.extend(valid.iter().map(|event| {
                Outcome::Failed(format!("event {} answered {status}: {text}", event.id))
            })),
            Err(error) => outcomes.extend(valid.iter().map(|_| Outcome::Failed(error.clone()))),
        }
        outcomes
    }

    async fn post(
        &self,
        body: Vec<u8>,
        content_type: &str,
        stop: &CancellationToken,
    ) -> Result<(StatusCode, String), String> {
        // A connection that fails is tried again on the retry policy's
        // schedule until its attempts are spent; 429 and 503 after the
        // gateway's `Retry-After` for as long as the run goes on.
        let policy = RetryPolicy::default();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let response = self
                .client
                .post(&self.events_url)
                .bearer_auth(&self.api_key)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body.clone())
                .send()
                .await;
            let wait = match response {
                Ok(response)
                    if response.status() == StatusCode::TOO_MANY_REQUESTS
                        || response.status() == StatusCode::SERVICE_UNAVAILABLE =>
                {
                    let seconds = response
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse().ok())
                        .unwrap_or(1);
                    Duration::from_secs(seconds)
                }
                Ok(response) => {
                    let status = response.status();
                    return Ok((status, response.text().await.unwrap_or_default()));
                }
                Err(error) => match policy.delay_after_attempt(attempts) {
                    Some(wait) => wait,
                    None => return Err(format!("gateway unreachable: {error}")),
                },
            };
            // After a stop, give up once the policy's attempts are spent.
            if stop.is_cancelled() && attempts >= policy.max_attempts {
                return Err("gateway still refusing when the run stopped".to_owned());
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Publishes `items` over AMQP with confirms: valid events as events,
/// invalid ones as raw bodies under their routing key (the workers
/// dead-letter them), so both count as accepted by the broker.
pub async fn publish_amqp(publisher: &Publisher, items: Vec<Item>) -> Vec<Outcome> {
    let sends = items.into_iter().map(|item| async move {
        let started = Instant::now();
        match item {
            Item::Valid(event) => match publisher.publish(&event).await {
                Ok(()) => accepted(&event, started.elapsed()),
                Err(error) => Outcome::Failed(error.to_string()),
            },
            Item::Invalid {
                bytes, routing_key, ..
            } => {
                let message = OutgoingMessage {
                    routing_key,
                    exchange: None,
                    body: bytes,
                    properties: lapin::BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_content_type(cloudevents::STRUCTURED.into()),
                };
                match publisher.publish_message(message).await {
                    // Poison on purpose: the workers must dead-letter it.
                    Ok(()) => Outcome::Refused,
                    Err(error) => Outcome::Failed(error.to_string()),
                }
            }
        }
    });
    futures_util::future::join_all(sends).await
}

/// Writes valid `items` to the outbox in one transaction (invalid items
/// cannot be written: the outbox takes events only).
pub async fn write_outbox(pool: &PgPool, items: Vec<Item>) -> Vec<Outcome> {
    let events: Vec<Event> = items
        .into_iter()
        .filter_map(|item| match item {
            Item::Valid(event) => Some(*event),
            Item::Invalid { .. } => None,
        })
        .collect();
    let started = Instant::now();
    let written = async {
        let mut transaction = pool.begin().await?;
        shared::outbox::enqueue(&mut transaction, &events)
            .await
            .map_err(|error| sqlx::Error::Protocol(error.to_string()))?;
        transaction.commit().await
    }
    .await;
    match written {
        Ok(()) => {
            let latency = started.elapsed();
            events
                .iter()
                .map(|event| accepted(event, latency))
                .collect()
        }
        Err(error) => events
            .iter()
            .map(|_| Outcome::Failed(format!("outbox write failed: {error}")))
            .collect(),
    }
}

fn accepted(event: &Event, latency: Duration) -> Outcome {
    Outcome::Accepted {
        id: event.id,
        event_type: event.event_type(),
        latency,
    }
}
