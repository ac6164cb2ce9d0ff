//! The topology's data: names, arguments and bindings, in one place.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::groups::ConsumerGroup;
use crate::settings::Settings;

/// Kind of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Routes by pattern (`order.*`); the events exchange.
    Topic,
    /// Routes by exact key; the dead-letter exchange.
    Direct,
}

/// A durable exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeSpec {
    /// Full name, namespace included.
    pub name: String,
    /// How it routes.
    pub kind: ExchangeKind,
}

/// A queue argument's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgumentValue {
    /// A string argument.
    Text(String),
    /// An integer argument.
    Integer(i64),
}

/// A durable quorum queue and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSpec {
    /// Full name, namespace included.
    pub name: String,
    /// `x-` arguments, sorted by name.
    pub arguments: BTreeMap<&'static str, ArgumentValue>,
}

/// A queue bound to an exchange with a routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSpec {
    /// Source exchange.
    pub exchange: String,
    /// Destination queue.
    pub queue: String,
    /// Routing key (an event type, or a group name on the dead-letter exchange).
    pub routing_key: String,
}

/// The queue names of one consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupQueues {
    /// The group.
    pub group: ConsumerGroup,
    /// Where its events arrive.
    pub work: String,
    /// Wait queues: `retry[n - 1]` holds events waiting after failed attempt `n`.
    pub retry: Vec<String>,
    /// Where the broker puts what it gives up on (delivery limit, rejects).
    pub dead_letter: String,
}

/// Everything Switchyard declares on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The name prefix (`""` = none).
    pub namespace: String,
    /// Exchanges, events exchange first.
    pub exchanges: Vec<ExchangeSpec>,
    /// Every queue of every group.
    pub queues: Vec<QueueSpec>,
    /// Every binding.
    pub bindings: Vec<BindingSpec>,
    /// Per-group queue names, in [`ConsumerGroup::ALL`] order.
    pub groups: Vec<GroupQueues>,
}

impl Topology {
    /// The topology for `settings`: its namespace, retry budget and delivery limit.
    pub fn new(settings: &Settings) -> Self {
        let names = Names(settings.namespace.clone());
        let events = names.of("events");
        let dead_letter_exchange = names.of("dead-letter");
        let mut topology = Topology {
            namespace: settings.namespace.clone(),
            exchanges: vec![
                ExchangeSpec {
                    name: events.clone(),
                    kind: ExchangeKind::Topic,
                },
                ExchangeSpec {
                    name: dead_letter_exchange.clone(),
                    kind: ExchangeKind::Direct,
                },
            ],
            queues: Vec::new(),
            bindings: Vec::new(),
            groups: Vec::new(),
        };
        // Wait queues hold a message at most this long even if its own
        // expiration were missing or larger: the longest jittered delay.
        let retry_cap = settings
            .retry
            .max_delay
            .mul_f64(1.0 + settings.retry.jitter);
        for group in ConsumerGroup::ALL {
            let queues = GroupQueues {
                group,
                work: names.of(group.as_str()),
                retry: (1..settings.retry.max_attempts)
                    .map(|attempt| names.of(&format!("{group}.retry-{attempt}")))
                    .collect(),
                dead_letter: names.of(&format!("{group}.dead-letter")),
            };
            topology.queues.push(QueueSpec {
                name: queues.work.clone(),
                arguments: work_queue_arguments(&dead_letter_exchange, group, settings),
            });
            for wait_queue in &queues.retry {
                topology.queues.push(QueueSpec {
                    name: wait_queue.clone(),
                    arguments: retry_queue_arguments(&queues.work, retry_cap),
                });
            }
            topology.queues.push(QueueSpec {
                name: queues.dead_letter.clone(),
                arguments: quorum(),
            });
            topology
                .bindings
                .extend(
                    group
                        .event_types()
                        .into_iter()
                        .map(|event_type| BindingSpec {
                            exchange: events.clone(),
                            queue: queues.work.clone(),
                            routing_key: event_type.as_str().to_owned(),
                        }),
                );
            topology.bindings.push(BindingSpec {
                exchange: dead_letter_exchange.clone(),
                queue: queues.dead_letter.clone(),
                routing_key: group.as_str().to_owned(),
            });
            topology.groups.push(queues);
        }
        topology
    }

    /// Name of the topic exchange events are published to.
    pub fn events_exchange(&self) -> &str {
        &self.exchanges[0].name
    }

    /// Name of the exchange the broker dead-letters to.
    pub fn dead_letter_exchange(&self) -> &str {
        &self.exchanges[1].name
    }

    /// The queue names of `group`.
    pub fn group(&self, group: ConsumerGroup) -> &GroupQueues {
        // `groups` holds every group, built from ConsumerGroup::ALL.
        let index = ConsumerGroup::ALL
            .iter()
            .position(|g| *g == group)
            .unwrap_or_default();
        &self.groups[index]
    }

    /// The spec of the queue called `name`, if it is one of ours.
    pub fn queue(&self, name: &str) -> Option<&QueueSpec> {
        self.queues.iter().find(|queue| queue.name == name)
    }
}

struct Names(String);

impl Names {
    fn of(&self, base: &str) -> String {
        if self.0.is_empty() {
            base.to_owned()
        } else {
            format!("{}.{base}", self.0)
        }
    }
}

fn quorum() -> BTreeMap<&'static str, ArgumentValue> {
    BTreeMap::from([("x-queue-type", ArgumentValue::Text("quorum".to_owned()))])
}

/// Dead-lettering that cannot drop: quorum queues confirm each dead-lettered
/// message with its target before removing it (`at-least-once`), which the
/// broker only allows together with `reject-publish` overflow.
fn safe_dead_lettering(exchange: &str, routing_key: &str) -> BTreeMap<&'static str, ArgumentValue> {
    let mut arguments = quorum();
    arguments.insert(
        "x-dead-letter-exchange",
        ArgumentValue::Text(exchange.to_owned()),
    );
    arguments.insert(
        "x-dead-letter-routing-key",
        ArgumentValue::Text(routing_key.to_owned()),
    );
    arguments.insert(
        "x-dead-letter-strategy",
        ArgumentValue::Text("at-least-once".to_owned()),
    );
    arguments.insert(
        "x-overflow",
        ArgumentValue::Text("reject-publish".to_owned()),
    );
    arguments
}

fn work_queue_arguments(
    dead_letter_exchange: &str,
    group: ConsumerGroup,
    settings: &Settings,
) -> BTreeMap<&'static str, ArgumentValue> {
    let mut arguments = safe_dead_lettering(dead_letter_exchange, group.as_str());
    // Explicit on every broker: 3.x has no default limit, 4.x defaults to 20.
    arguments.insert(
        "x-delivery-limit",
        ArgumentValue::Integer(i64::from(settings.queues.delivery_limit)),
    );
    arguments
}

fn retry_queue_arguments(work_queue: &str, cap: Duration) -> BTreeMap<&'static str, ArgumentValue> {
    // Expired messages go back through the default exchange, which routes
    // by queue name: straight to the group's own work queue and nowhere else.
    let mut arguments = safe_dead_lettering("", work_queue);
    arguments.insert(
        "x-message-ttl",
        ArgumentValue::Integer(i64::try_from(cap.as_millis()).unwrap_or(i64::MAX)),
    );
    arguments
}
