//! [`Publisher`]: confirmed, mandatory, persistent publishing with many
//! publishes in flight and a bounded wait for each.

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::Confirmation;
use lapin::PublisherConfirm;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{Channel, Connection};
use tokio::sync::{Mutex, Semaphore, SemaphorePermit};

use super::error::PublishError;
use super::message::OutgoingMessage;
use super::turns::Sequencer;
use crate::broker::connect;
use crate::events::Event;
use crate::settings::{PublishSettings, Settings};

/// Publishes events to the events exchange and waits for broker confirms.
///
/// Cheap to clone; clones share one connection, one confirm-mode channel and
/// one in-flight window of `max_in_flight` publishes. A publish returns `Ok`
/// only once the broker confirmed a routed message; it never hangs longer
/// than the configured timeout. After a broker outage lapin recovers the
/// connection; if recovery gives up, the next publish opens a new one.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Settings,
    exchange: String,
    name: String,
    window: Semaphore,
    session: Mutex<Option<Session>>,
    turns: Sequencer,
}

struct Session {
    connection: Connection,
    channel: Channel,
}

impl Publisher {
    /// A publisher to `exchange`; connects lazily on first publish.
    pub fn new(settings: &Settings, exchange: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                exchange: exchange.into(),
                name: name.into(),
                window: Semaphore::new(settings.publish.max_in_flight),
                session: Mutex::new(None),
                turns: Sequencer::new(settings.publish.timeout),
                settings: settings.clone(),
            }),
        }
    }

    /// A publisher that has already connected (so start-up fails fast when
    /// the broker is unreachable).
    pub async fn connect(
        settings: &Settings,
        exchange: impl Into<String>,
        name: impl Into<String>,
    ) -> Result<Self, PublishError> {
        let publisher = Self::new(settings, exchange, name);
        publisher.channel().await?;
        Ok(publisher)
    }

    /// Publishes holding a slot of the in-flight window now.
    pub fn in_flight(&self) -> usize {
        self.inner
            .settings
            .publish
            .max_in_flight
            .saturating_sub(self.inner.window.available_permits())
    }

    /// The publish settings in force.
    pub fn settings(&self) -> &PublishSettings {
        &self.inner.settings.publish
    }

    /// Publishes one event and waits for its confirm.
    pub async fn publish(&self, event: &Event) -> Result<(), PublishError> {
        self.publish_message(OutgoingMessage::for_event(event))
            .await
    }

    /// Publishes many events, up to the window's worth awaiting their
    /// confirms at once, and returns one result per event, in order. They
    /// are sent in the order given, so every queue receives them in that
    /// order: a consumer applies a queue's events as they arrive, and an
    /// event that overtakes the one it depends on (a payment its order)
    /// waits a retry delay.
    pub async fn publish_all(&self, events: &[Event]) -> Vec<Result<(), PublishError>> {
        self.publish_all_messages(events.iter().map(OutgoingMessage::for_event))
            .await
    }

    /// [`Publisher::publish_all`] for prepared messages: each is sent once
    /// the one before it is handed to the connection (not confirmed), each
    /// bounded by the publish timeout from when its turn came. When one
    /// cannot be sent (no connection, no slot in time), those after it are
    /// not tried and fail as the broker being unavailable.
    pub async fn publish_all_messages(
        &self,
        messages: impl IntoIterator<Item = OutgoingMessage>,
    ) -> Vec<Result<(), PublishError>> {
        let timeout = self.inner.settings.publish.timeout;
        let mut results = Vec::new();
        let mut confirming = FuturesUnordered::new();
        let mut unsent: Option<String> = None;
        for (index, message) in messages.into_iter().enumerate() {
            // After one could not be sent, the rest are not tried: sent,
            // they would overtake it (and each would wait its own timeout
            // on a broker that is gone).
            if let Some(reason) = &unsent {
                results.push(Err(PublishError::BrokerUnavailable(format!(
                    "not sent: an earlier message of the batch could not be ({reason})"
                ))));
                continue;
            }
            results.push(Err(PublishError::Timeout(timeout)));
            let deadline = tokio::time::Instant::now() + timeout;
            let sending = tokio::time::timeout_at(deadline, self.send_in_window(&message));
            tokio::pin!(sending);
            // While waiting for a slot, the confirms that free one are read.
            let sent = loop {
                tokio::select! {
                    sent = &mut sending => break sent,
                    Some((index, result)) = confirming.next(), if !confirming.is_empty() => {
                        results[index] = result;
                    }
                }
            };
            match sent {
                Ok(Ok((slot, confirm))) => {
                    let routing_key = message.routing_key.clone();
                    confirming.push(async move {
                        let result = match tokio::time::timeout_at(
                            deadline,
                            confirmed(confirm, &routing_key),
                        )
                        .await
                        {
                            Ok(result) => result,
                            Err(_elapsed) => Err(timed_out(&routing_key, timeout)),
                        };
                        drop(slot);
                        (index, result)
                    });
                }
                Ok(Err(error)) => {
                    unsent = Some(error.to_string());
                    results[index] = Err(error);
                }
                Err(_elapsed) => {
                    let error = timed_out(&message.routing_key, timeout);
                    unsent = Some(error.to_string());
                    results[index] = Err(error);
                }
            }
        }
        while let Some((index, result)) = confirming.next().await {
            results[index] = result;
        }
        results
    }

    /// Publishes a prepared message (mandatory, with confirm) and waits for
    /// the confirm. The whole of it — waiting for its turn and for a slot in
    /// the in-flight window, publishing, confirming — takes at most the
    /// configured timeout. Publishes in flight together are sent in the
    /// order they were started (first polled): each takes a turn then.
    pub async fn publish_message(&self, message: OutgoingMessage) -> Result<(), PublishError> {
        let timeout = self.inner.settings.publish.timeout;
        let mut turn = self.inner.turns.take();
        let publish = async {
            turn.wait().await;
            let sent = self.send_in_window(&message).await;
            turn.end();
            let (_slot, confirm) = sent?;
            confirmed(confirm, &message.routing_key).await
        };
        // A publish can hang while the server shuts down: bound the whole of it.
        match tokio::time::timeout(timeout, publish).await {
            Ok(result) => result,
            Err(_elapsed) => Err(timed_out(&message.routing_key, timeout)),
        }
    }

    /// Takes a slot of the in-flight window (held until the confirm is
    /// read) and hands `message` to the connection.
    async fn send_in_window(
        &self,
        message: &OutgoingMessage,
    ) -> Result<(SemaphorePermit<'_>, PublisherConfirm), PublishError> {
        let slot = self
            .inner
            .window
            .acquire()
            .await
            .map_err(|_| PublishError::BrokerUnavailable("publisher closed".to_owned()))?;
        Ok((slot, self.send(message).await?))
    }

    /// Hands `message` to the connection (mandatory, on the confirm-mode
    /// channel); the returned confirm resolves when the broker answers.
    async fn send(&self, message: &OutgoingMessage) -> Result<PublisherConfirm, PublishError> {
        let channel = self.channel().await?;
        let exchange = message.exchange.as_deref().unwrap_or(&self.inner.exchange);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        channel
            .basic_publish(
                exchange.into(),
                message.routing_key.as_str().into(),
                options,
                &message.body,
                message.properties.clone(),
            )
            .await
            .map_err(unavailable)
    }

    /// The confirm-mode channel, (re)opened when there is none or when the
    /// connection or channel can no longer recover.
    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut session = self.inner.session.lock().await;
        if let Some(current) = session.as_ref() {
            let connection = current.connection.status();
            let broken = connection.errored() || connection.closed() || connection.closing();
            let channel = current.channel.status();
            let channel_gone =
                !channel.connected() && !channel.reconnecting() && !channel.initializing();
            if !broken && !channel_gone {
                return Ok(current.channel.clone());
            }
            tracing::info!(publisher = %self.inner.name, "reopening the broker connection");
            *session = None;
        }
        let connection = connect(&self.inner.settings, &self.inner.name)
            .await
            .map_err(|error| PublishError::BrokerUnavailable(error.to_string()))?;
        let channel = connection.create_channel().await.map_err(unavailable)?;
        // Without confirm mode every confirm reads NotRequested: never skip it.
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        *session = Some(Session {
            connection,
            channel: channel.clone(),
        });
        Ok(channel)
    }

    /// Whether a confirm-mode channel is connected now, opening one if there
    /// is none (for readiness probes; a channel that is still recovering
    /// is not ready); waits at most `patience`.
    pub async fn ready(&self, patience: std::time::Duration) -> bool {
        tokio::time::timeout(patience, self.channel())
            .await
            .is_ok_and(|channel| channel.is_ok_and(|channel| channel.status().connected()))
    }

    /// Waits for the publishes in flight to end (each is bounded by the
    /// publish timeout), refuses new ones, then closes the connection.
    pub async fn close(&self) {
        let window = u32::try_from(self.inner.settings.publish.max_in_flight).unwrap_or(u32::MAX);
        // Tokio's semaphore is fair: once this waits for the whole window,
        // later publishes queue behind it and are refused by `close` below.
        let drained = tokio::time::timeout(
            self.inner.settings.publish.timeout,
            self.inner.window.acquire_many(window),
        )
        .await;
        if drained.is_err() {
            tracing::warn!(publisher = %self.inner.name, "closing with publishes still in flight");
        }
        self.inner.window.close();
        drop(drained);
        if let Some(session) = self.inner.session.lock().await.take() {
            // A broker that stopped answering never sends Close-Ok.
            let closing = session.connection.close(200, "shutdown".into());
            let _ = tokio::time::timeout(self.inner.settings.publish.timeout, closing).await;
        }
    }
}

fn interpret(confirmation: Confirmation, routing_key: &str) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        // With `mandatory`, an unroutable message is returned, then acked.
        Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
            Err(PublishError::Unroutable {
                routing_key: routing_key.to_owned(),
                reply_text: returned.reply_text.to_string(),
            })
        }
        Confirmation::Nack(None) => Err(PublishError::Nacked {
            routing_key: routing_key.to_owned(),
        }),
        Confirmation::NotRequested => Err(PublishError::BrokerUnavailable(
            "channel is not in confirm mode".to_owned(),
        )),
    }
}

/// What the broker answered to a sent message.
async fn confirmed(confirm: PublisherConfirm, routing_key: &str) -> Result<(), PublishError> {
    interpret(confirm.await.map_err(unavailable)?, routing_key)
}

fn timed_out(routing_key: &str, timeout: std::time::Duration) -> PublishError {
    tracing::warn!(routing_key, ?timeout, "publish confirm timed out");
    PublishError::Timeout(timeout)
}

fn unavailable(error: lapin::Error) -> PublishError {
    PublishError::BrokerUnavailable(error.to_string())
}
