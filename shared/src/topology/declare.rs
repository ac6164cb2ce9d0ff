//! Declaring the topology on a broker: idempotent, and refusing to run on a
//! pre-existing queue whose arguments would lose messages.

use lapin::options::{
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Connection, ExchangeKind as LapinExchangeKind};

use super::spec::{ArgumentValue, ExchangeKind, QueueSpec, Topology};

/// Why the topology could not be declared.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A queue of ours already exists with other arguments: running on it
    /// could lose or mis-route messages, so Switchyard refuses to start.
    #[error(
        "queue {queue:?} already exists with arguments that differ from Switchyard's \
         ({broker_says}). Switchyard needs {expected} so that nothing the broker gives up on \
         is dropped. Refusing to run: drain and delete the queue, or use another \
         SWITCHYARD_NAMESPACE"
    )]
    IncompatibleQueue {
        /// The queue's name.
        queue: String,
        /// The broker's PRECONDITION_FAILED text, naming the argument.
        broker_says: String,
        /// The arguments Switchyard declares.
        expected: String,
    },
    /// An exchange of ours exists with another kind or durability.
    #[error(
        "exchange {exchange:?} already exists with other settings ({broker_says}); refusing to run"
    )]
    IncompatibleExchange {
        /// The exchange's name.
        exchange: String,
        /// The broker's explanation.
        broker_says: String,
    },
    /// The broker could not be reached or failed otherwise.
    #[error("broker error while declaring {object}: {source}")]
    Broker {
        /// What was being declared.
        object: String,
        /// The client's error.
        #[source]
        source: lapin::Error,
    },
}

impl Topology {
    /// Declares every exchange, queue and binding. Idempotent: declaring an
    /// existing, identical topology changes nothing. Fails with
    /// [`TopologyError::IncompatibleQueue`] when a queue exists with other arguments.
    pub async fn declare(&self, connection: &Connection) -> Result<(), TopologyError> {
        for exchange in &self.exchanges {
            // A failed declare closes its channel, so each object gets a fresh one.
            let channel = open_channel(connection, &exchange.name).await?;
            let kind = match exchange.kind {
                ExchangeKind::Topic => LapinExchangeKind::Topic,
                ExchangeKind::Direct => LapinExchangeKind::Direct,
            };
            let options = ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            };
            channel
                .exchange_declare(
                    exchange.name.as_str().into(),
                    kind,
                    options,
                    FieldTable::default(),
                )
                .await
                .map_err(|source| match precondition_failed(&source) {
                    Some(broker_says) => TopologyError::IncompatibleExchange {
                        exchange: exchange.name.clone(),
                        broker_says,
                    },
                    None => broker_error(&exchange.name, source),
                })?;
            close_quietly(channel).await;
        }
        for queue in &self.queues {
            declare_queue(connection, queue).await?;
        }
        let channel = open_channel(connection, "bindings").await?;
        for binding in &self.bindings {
            channel
                .queue_bind(
                    binding.queue.as_str().into(),
                    binding.exchange.as_str().into(),
                    binding.routing_key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| broker_error(&binding.queue, source))?;
        }
        close_quietly(channel).await;
        tracing::info!(
            namespace = %self.namespace,
            exchanges = self.exchanges.len(),
            queues = self.queues.len(),
            bindings = self.bindings.len(),
            "topology declared"
        );
        Ok(())
    }

    /// Deletes every queue and exchange of this topology, messages included.
    /// For tests and for tearing down a namespace; never called at start.
    pub async fn delete(&self, connection: &Connection) -> Result<(), TopologyError> {
        let channel = open_channel(connection, "teardown").await?;
        for queue in &self.queues {
            channel
                .queue_delete(queue.name.as_str().into(), QueueDeleteOptions::default())
                .await
                .map_err(|source| broker_error(&queue.name, source))?;
        }
        for exchange in &self.exchanges {
            channel
                .exchange_delete(
                    exchange.name.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await
                .map_err(|source| broker_error(&exchange.name, source))?;
        }
        close_quietly(channel).await;
        Ok(())
    }
}

async fn declare_queue(connection: &Connection, queue: &QueueSpec) -> Result<(), TopologyError> {
    let channel = open_channel(connection, &queue.name).await?;
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .queue_declare(queue.name.as_str().into(), options, to_field_table(queue))
        .await
        .map_err(|source| match precondition_failed(&source) {
            Some(broker_says) => TopologyError::IncompatibleQueue {
                queue: queue.name.clone(),
                broker_says,
                expected: describe_arguments(queue),
            },
            None => broker_error(&queue.name, source),
        })?;
    close_quietly(channel).await;
    Ok(())
}

/// The queue's arguments as lapin's field table.
pub fn to_field_table(queue: &QueueSpec) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in &queue.arguments {
        let value = match value {
            ArgumentValue::Text(text) => AMQPValue::LongString(LongString::from(text.as_str())),
            ArgumentValue::Integer(number) => AMQPValue::LongLongInt(*number),
        };
        table.insert((*name).into(), value);
    }
    table
}

fn describe_arguments(queue: &QueueSpec) -> String {
    let arguments: Vec<String> = queue
        .arguments
        .iter()
        .map(|(name, value)| match value {
            ArgumentValue::Text(text) => format!("{name}={text:?}"),
            ArgumentValue::Integer(number) => format!("{name}={number}"),
        })
        .collect();
    arguments.join(", ")
}

/// The broker's reply text when `error` is a PRECONDITION_FAILED (406)
/// channel close: the sign of an existing object with other arguments.
fn precondition_failed(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 406 => {
            Some(amqp.get_message().to_string())
        }
        _ => None,
    }
}

async fn open_channel(
    connection: &Connection,
    object: &str,
) -> Result<lapin::Channel, TopologyError> {
    connection
        .create_channel()
        .await
        .map_err(|source| broker_error(object, source))
}

async fn close_quietly(channel: lapin::Channel) {
    // Closing a healthy channel only fails when the connection is going away,
    // which the next operation reports.
    let _ = channel.close(200, "OK".into()).await;
}

fn broker_error(object: &str, source: lapin::Error) -> TopologyError {
    TopologyError::Broker {
        object: object.to_owned(),
        source,
    }
}
