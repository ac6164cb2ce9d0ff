//! What the load generator sends: the simulated store's events, a share of
//! them made invalid, each assigned a route and a lane. The sequence of
//! event types and defects is drawn from the seed, so a run can be repeated;
//! ids are new every run.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shared::events::Event;
use shared::simulation::StoreTraffic;

/// How an item reaches the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The run's main target (the gateway or AMQP).
    Direct,
    /// Written to the transactional outbox and published by the relay.
    Outbox,
}

/// One thing to send.
#[derive(Debug, Clone)]
pub enum Item {
    /// A valid event (boxed: it is much larger than the other variant).
    Valid(Box<Event>),
    /// Bytes that must be refused (400 at the gateway, a dead letter over
    /// AMQP), with the routing key the event would have had.
    Invalid {
        /// The body as sent.
        bytes: Vec<u8>,
        /// Routing key for AMQP.
        routing_key: String,
        /// How it was broken.
        defect: &'static str,
    },
}

impl Item {
    /// The line this item adds to an NDJSON record of the run.
    pub fn ndjson_line(&self) -> Vec<u8> {
        match self {
            Item::Valid(event) => event.to_json_bytes(),
            Item::Invalid { bytes, .. } => bytes.clone(),
        }
    }
}

/// One planned send.
#[derive(Debug, Clone)]
pub struct Planned {
    /// What.
    pub item: Item,
    /// How.
    pub route: Route,
    /// Which sender: events of one partition key always share one, so
    /// they leave in order.
    pub lane: usize,
}

/// Draws the run's items.
pub struct Planner {
    store: StoreTraffic,
    random: StdRng,
    invalid_share: f64,
    outbox_share: f64,
    lanes: usize,
    /// The valid event held back while its spoiled copy goes first.
    held_back: Option<Planned>,
}

impl Planner {
    /// `invalid_share` and `outbox_share` are fractions in `[0, 1]`.
    pub fn new(seed: u64, invalid_share: f64, outbox_share: f64, lanes: usize) -> Self {
        Self {
            store: StoreTraffic::new(seed),
            random: StdRng::seed_from_u64(seed ^ 0x5eed_1047),
            invalid_share: invalid_share.clamp(0.0, 1.0),
            outbox_share: outbox_share.clamp(0.0, 1.0),
            lanes: lanes.max(1),
            held_back: None,
        }
    }

    /// The next item. A partition key's events all take one route (so an
    /// order's events are not split between the gateway and the outbox).
    /// Invalid items are spoiled copies sent in addition to the valid
    /// stream, so the store's story stays whole (no payment is left
    /// waiting for an order that was never valid).
    pub fn next_planned(&mut self) -> Planned {
        if let Some(planned) = self.held_back.take() {
            return planned;
        }
        let event = self.store.next_event();
        let hash = stable_hash(&event.partition_key);
        let lane = (hash % self.lanes as u64) as usize;
        let outbox = ((hash >> 16) % 10_000) as f64 / 10_000.0 < self.outbox_share;
        let valid = Planned {
            item: Item::Valid(Box::new(event.clone())),
            route: if outbox { Route::Outbox } else { Route::Direct },
            lane,
        };
        if !self.random.random_bool(self.invalid_share) {
            return valid;
        }
        self.held_back = Some(valid);
        Planned {
            item: self.spoil(event),
            route: Route::Direct,
            lane,
        }
    }

    /// A broken copy of `event` under a fresh id (so it cannot be mistaken
    /// for a duplicate of a valid one).
    fn spoil(&mut self, event: Event) -> Item {
        let routing_key = event.event_type().as_str().to_owned();
        let mut envelope = event.to_envelope();
        envelope.id = uuid::Uuid::now_v7().to_string();
        let defect = match self.random.random_range(0..4) {
            0 => {
                envelope.event_type = "order.teleported".into();
                "unknown_type"
            }
            1 => {
                envelope.id = "not-a-uuid".into();
                "invalid_id"
            }
            2 => {
                envelope.data = serde_json::json!({"unexpected": true});
                "invalid_data"
            }
            _ => {
                envelope.dataschema =
                    Some(format!("urn:switchyard:schema:{}:v99", envelope.event_type));
                "unsupported_version"
            }
        };
        Item::Invalid {
            bytes: serde_json::to_vec(&envelope).unwrap_or_default(),
            routing_key,
            defect,
        }
    }
}

/// FNV-1a: stable across runs and builds (std's hasher is randomised).
fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::events::DEFAULT_MAX_EVENT_BYTES;

    #[test]
    fn plans_repeat_per_seed_and_keep_a_key_on_one_route_and_lane() {
        let shape = |seed| {
            let mut planner = Planner::new(seed, 0.1, 0.3, 4);
            (0..500)
                .map(|_| {
                    let planned = planner.next_planned();
                    match planned.item {
                        Item::Valid(event) => event.event_type().as_str().to_owned(),
                        Item::Invalid { defect, .. } => defect.to_owned(),
                    }
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(shape(3), shape(3));
        assert_ne!(shape(3), shape(4));
        let mut planner = Planner::new(9, 0.0, 0.5, 4);
        let mut seen = std::collections::HashMap::new();
        let mut outbox = 0;
        for _ in 0..2_000 {
            let planned = planner.next_planned();
            let Item::Valid(event) = planned.item else {
                panic!("no invalid share")
            };
            outbox += usize::from(planned.route == Route::Outbox);
            let first = seen
                .entry(event.partition_key.clone())
                .or_insert((planned.route, planned.lane));
            assert_eq!(*first, (planned.route, planned.lane));
        }
        assert!((500..1_500).contains(&outbox), "{outbox}");
    }

    #[test]
    fn spoiled_copies_come_in_addition_and_are_refused_by_the_decoder() {
        let mut planner = Planner::new(1, 1.0, 0.0, 1);
        for _ in 0..200 {
            let Item::Invalid { bytes, .. } = planner.next_planned().item else {
                panic!("a spoiled copy first")
            };
            assert!(shared::events::Event::decode(&bytes, DEFAULT_MAX_EVENT_BYTES).is_err());
            let Item::Valid(_) = planner.next_planned().item else {
                panic!("then the valid event")
            };
        }
    }
}
