//! Queue depths of a topology, read with passive declares.

use lapin::Connection;
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;

use super::declare::TopologyError;
use super::spec::Topology;
use crate::groups::ConsumerGroup;

/// Messages and consumers on one group's queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDepth {
    /// The group.
    pub group: ConsumerGroup,
    /// Ready messages on the work queue.
    pub work: u32,
    /// Consumers attached to the work queue.
    pub consumers: u32,
    /// Messages waiting in all retry wait queues.
    pub retrying: u32,
    /// Messages in the dead-letter queue.
    pub dead_letter: u32,
}

/// The depths as an aligned table, one line per group, header first.
pub fn depth_table(depths: &[GroupDepth]) -> String {
    let mut table = format!(
        "{:<10} {:>10} {:>10} {:>10} {:>10}\n",
        "group", "ready", "retrying", "dead", "consumers"
    );
    for depth in depths {
        table.push_str(&format!(
            "{:<10} {:>10} {:>10} {:>10} {:>10}\n",
            depth.group, depth.work, depth.retrying, depth.dead_letter, depth.consumers
        ));
    }
    table
}

impl Topology {
    /// Reads the depth of every group's queues; a queue that does not exist
    /// counts as empty.
    pub async fn depths(&self, connection: &Connection) -> Result<Vec<GroupDepth>, TopologyError> {
        let mut depths = Vec::new();
        for queues in &self.groups {
            let (work, consumers) = depth(connection, &queues.work).await?;
            let mut retrying = 0;
            for wait_queue in &queues.retry {
                retrying += depth(connection, wait_queue).await?.0;
            }
            let (dead_letter, _) = depth(connection, &queues.dead_letter).await?;
            depths.push(GroupDepth {
                group: queues.group,
                work,
                consumers,
                retrying,
                dead_letter,
            });
        }
        Ok(depths)
    }
}

impl Topology {
    /// How many of the namespace's queues exist on the broker now.
    pub async fn existing_queues(&self, connection: &Connection) -> Result<usize, TopologyError> {
        let mut existing = 0;
        for queue in &self.queues {
            if probe(connection, &queue.name).await?.is_some() {
                existing += 1;
            }
        }
        Ok(existing)
    }
}

async fn depth(connection: &Connection, queue: &str) -> Result<(u32, u32), TopologyError> {
    Ok(probe(connection, queue).await?.unwrap_or((0, 0)))
}

/// A queue's messages and consumers, or `None` when it does not exist.
async fn probe(connection: &Connection, queue: &str) -> Result<Option<(u32, u32)>, TopologyError> {
    let broker_error = |source| TopologyError::Broker {
        object: queue.to_owned(),
        source,
    };
    // A passive declare of a missing queue closes its channel: one per queue.
    let channel = connection.create_channel().await.map_err(broker_error)?;
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    match channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await
    {
        Ok(declared) => {
            let _ = channel.close(200, "OK".into()).await;
            Ok(Some((declared.message_count(), declared.consumer_count())))
        }
        Err(error) if is_not_found(&error) => Ok(None),
        Err(error) => Err(broker_error(error)),
    }
}

fn is_not_found(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}
