//! What an API key may publish: event types and CloudEvents `source`s.

use shared::events::{Event, EventType};

/// Grants every event type (in `allowed_types`).
pub const ANY_TYPE: &str = "*";

/// The event types and sources a key may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    /// Type names, or [`ANY_TYPE`].
    types: Vec<String>,
    /// Exact sources, or prefixes ending in `*` (`/shop/*`; `*` alone: any).
    sources: Vec<String>,
}

/// An event its key may not publish: which attribute, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct NotGranted {
    /// `type` or `source`.
    pub field: &'static str,
    /// What the key lacks.
    pub reason: String,
}

/// A grant given on the command line is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// A type name that is not in the catalog.
    #[error("unknown event type {0:?} (known: {known})", known = known_types())]
    UnknownType(String),
    /// An empty list or an empty entry.
    #[error("a key needs at least one {0}, and no empty entries")]
    Empty(&'static str),
    /// A source a CloudEvent could never carry: a control character (NUL
    /// cannot even be stored), or longer than any event's source may be.
    #[error(
        "source {0:?} cannot match an event: no control characters, at most {MAX_SOURCE_BYTES} bytes"
    )]
    BadSource(String),
}

/// The longest source a grant may name: an event's `source`, bounded the
/// same way at decode (it travels as the AMQP `app_id`).
pub const MAX_SOURCE_BYTES: usize = shared::events::limits::MAX_SHORT_ATTRIBUTE_BYTES;

fn known_types() -> String {
    EventType::ALL
        .iter()
        .map(|event_type| event_type.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Grants {
    /// Checks and builds grants: every type must be in the catalog (or `*`),
    /// and neither list may be empty.
    pub fn new(types: Vec<String>, sources: Vec<String>) -> Result<Self, GrantError> {
        if types.is_empty() || types.iter().any(|name| name.trim().is_empty()) {
            return Err(GrantError::Empty("event type"));
        }
        if sources.is_empty() || sources.iter().any(|source| source.trim().is_empty()) {
            return Err(GrantError::Empty("source"));
        }
        for name in &types {
            if name != ANY_TYPE && name.parse::<EventType>().is_err() {
                return Err(GrantError::UnknownType(name.clone()));
            }
        }
        if let Some(bad) = sources
            .iter()
            .find(|source| source.len() > MAX_SOURCE_BYTES || source.chars().any(char::is_control))
        {
            return Err(GrantError::BadSource(bad.clone()));
        }
        Ok(Self { types, sources })
    }

    /// Grants as read back from the store (checked when they were stored).
    pub(crate) fn from_stored(types: Vec<String>, sources: Vec<String>) -> Self {
        Self { types, sources }
    }

    /// The granted type names.
    pub fn types(&self) -> &[String] {
        &self.types
    }

    /// The granted sources and source prefixes.
    pub fn sources(&self) -> &[String] {
        &self.sources
    }

    /// Whether the key may publish `event`; the type is checked first.
    pub fn check(&self, event: &Event) -> Result<(), NotGranted> {
        let event_type = event.event_type().as_str();
        if !self
            .types
            .iter()
            .any(|granted| granted == ANY_TYPE || granted == event_type)
        {
            return Err(NotGranted {
                field: "type",
                reason: format!("this key may not publish {event_type} events"),
            });
        }
        let source = event.source.as_str();
        // `/checkout/../billing` starts with `/checkout/` but names
        // `/billing`: a prefix grant never matches a path that climbs.
        let climbs = has_dot_segment(source);
        let allowed = self
            .sources
            .iter()
            .any(|granted| match granted.strip_suffix('*') {
                Some(prefix) => source.starts_with(prefix) && !climbs,
                None => granted == source,
            });
        if !allowed && climbs {
            return Err(NotGranted {
                field: "source",
                reason: format!(
                    "source {source:?} has a '.' or '..' path segment; prefix grants match only normalised sources"
                ),
            });
        }
        if !allowed {
            return Err(NotGranted {
                field: "source",
                reason: format!("this key may not publish events from source {source:?}"),
            });
        }
        Ok(())
    }
}

/// Whether the path of URI-reference `source` has a `.` or `..` segment,
/// percent-encoded dots (`%2e`) included.
fn has_dot_segment(source: &str) -> bool {
    let path = source.split(['?', '#']).next().unwrap_or_default();
    path.split('/').any(|segment| {
        let decoded = segment.replace("%2e", ".").replace("%2E", ".");
        decoded == "." || decoded == ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::simulation::StoreTraffic;

    fn grants(types: &[&str], sources: &[&str]) -> Grants {
        Grants::new(
            types.iter().map(|s| s.to_string()).collect(),
            sources.iter().map(|s| s.to_string()).collect(),
        )
        .unwrap()
    }

    fn event_of(event_type: EventType, source: &str) -> Event {
        let mut store = StoreTraffic::new(3);
        let mut event = std::iter::repeat_with(|| store.next_event())
            .find(|event| event.event_type() == event_type)
            .unwrap();
        event.source = source.to_owned();
        event
    }

    #[test]
    fn types_and_sources_are_both_required() {
        let checkout = grants(&["order.placed"], &["/checkout"]);
        assert_eq!(
            checkout.check(&event_of(EventType::OrderPlaced, "/checkout")),
            Ok(())
        );
        assert_eq!(
            checkout
                .check(&event_of(EventType::PaymentCaptured, "/checkout"))
                .unwrap_err()
                .field,
            "type"
        );
        assert_eq!(
            checkout
                .check(&event_of(EventType::OrderPlaced, "/checkout-v2"))
                .unwrap_err()
                .field,
            "source"
        );
    }

    #[test]
    fn wildcards_grant_any_type_and_source_prefixes() {
        let shop = grants(&["*"], &["/shop/*"]);
        assert_eq!(
            shop.check(&event_of(EventType::OrderShipped, "/shop/eu")),
            Ok(())
        );
        assert!(
            shop.check(&event_of(EventType::OrderShipped, "/shopping"))
                .is_err()
        );
        assert_eq!(
            grants(&["order.placed"], &["*"]).check(&event_of(EventType::OrderPlaced, "/x")),
            Ok(())
        );
    }

    #[test]
    fn a_prefix_grant_never_matches_a_source_with_dot_segments() {
        let checkout = grants(&["*"], &["/checkout/*"]);
        for climbing in [
            "/checkout/../billing",
            "/checkout/./x",
            "/checkout/%2e%2e/billing",
            "/checkout/%2E./billing",
            "/checkout/..",
        ] {
            let error = checkout
                .check(&event_of(EventType::OrderPlaced, climbing))
                .unwrap_err();
            assert_eq!(error.field, "source", "{climbing}");
            assert!(error.reason.contains("'..'"), "{}", error.reason);
        }
        assert_eq!(
            checkout.check(&event_of(EventType::OrderPlaced, "/checkout/v2..x/y")),
            Ok(())
        );
    }

    #[test]
    fn unknown_types_and_empty_lists_are_refused() {
        assert!(matches!(
            Grants::new(vec!["order.eaten".into()], vec!["/x".into()]),
            Err(GrantError::UnknownType(_))
        ));
        assert!(Grants::new(vec![], vec!["/x".into()]).is_err());
        assert!(Grants::new(vec!["*".into()], vec![" ".into()]).is_err());
    }
}
