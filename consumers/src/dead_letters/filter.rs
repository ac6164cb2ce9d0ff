//! Which dead letters an operation applies to.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::groups::ConsumerGroup;
use uuid::Uuid;

/// A dead letter's place in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for an operator.
    #[default]
    Open,
    /// Sent back to its group's work queue by a replay.
    Replayed,
    /// Handled outside Switchyard.
    Resolved,
    /// Given up; the payload is deleted.
    Purged,
    /// Any status (filters only).
    All,
}

impl Status {
    /// The name stored in the database (`all` matches every row).
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Replayed => "replayed",
            Status::Resolved => "resolved",
            Status::Purged => "purged",
            Status::All => "all",
        }
    }
}

/// Most characters of a text filter.
const MAX_FILTER_CHARS: usize = 1024;
/// Most ids in one filter.
pub const MAX_FILTER_IDS: usize = 10_000;

/// Which dead letters to act on. Every field narrows the set; an empty
/// filter matches every open dead letter. The CLI takes it as flags, the
/// API as a JSON object with the same names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Only this consumer group.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<ConsumerGroup>,
    /// Only this event type (`order.placed`).
    #[arg(long = "type")]
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub event_type: Option<String>,
    /// Only this error kind (`order_unknown`, `poison`, `broker_delivery_limit`…).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// Only errors whose message contains this text (case-insensitive).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Only this failure fingerprint, as `summary` prints it.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// Only events of this partition key (an order id, a SKU…).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// Only this event id.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<Uuid>,
    /// Only dead letters whose last failure is at or after this time (RFC 3339).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Only dead letters whose last failure is before this time (RFC 3339).
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Only dead letters with at least this many attempts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_attempts: Option<i32>,
    /// Only dead letters with at most this many attempts.
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i32>,
    /// Only dead letters in this status.
    #[arg(long, value_enum, default_value_t)]
    pub status: Status,
    /// Only these dead-letter ids (repeatable or comma-separated).
    #[arg(long = "id", value_delimiter = ',')]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<i64>,
    /// Act on every dead letter of the status: a replay, resolve or purge
    /// whose filter narrows nothing else must say so.
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// A filter that cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FilterError {
    /// The filter field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl Filter {
    /// Refuses a filter whose values cannot be stored or compared: text
    /// with NUL or over 1,024 characters, more than 10,000 ids, a negative
    /// number of attempts. (A time range or attempt range that is empty
    /// matches nothing: it is not an error.)
    pub fn validate(&self) -> Result<(), FilterError> {
        let texts = [
            ("type", &self.event_type),
            ("error_kind", &self.error_kind),
            ("error", &self.error),
            ("fingerprint", &self.fingerprint),
            ("partition_key", &self.partition_key),
        ];
        for (field, value) in texts {
            if let Some(value) = value {
                if value.contains('\0') {
                    return Err(FilterError {
                        field,
                        reason: "must not contain NUL".to_owned(),
                    });
                }
                if value.chars().count() > MAX_FILTER_CHARS {
                    return Err(FilterError {
                        field,
                        reason: format!("longer than {MAX_FILTER_CHARS} characters"),
                    });
                }
            }
        }
        if self.ids.len() > MAX_FILTER_IDS {
            return Err(FilterError {
                field: "ids",
                reason: format!("more than {MAX_FILTER_IDS} ids"),
            });
        }
        for (field, attempts) in [
            ("min_attempts", self.min_attempts),
            ("max_attempts", self.max_attempts),
        ] {
            if attempts.is_some_and(|attempts| attempts < 0) {
                return Err(FilterError {
                    field,
                    reason: "must not be negative".to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Whether a field other than `status` narrows the set.
    pub fn narrows(&self) -> bool {
        let Filter {
            group,
            event_type,
            error_kind,
            error,
            fingerprint,
            partition_key,
            event_id,
            since,
            until,
            min_attempts,
            max_attempts,
            status: _,
            ids,
            all: _,
        } = self;
        group.is_some()
            || event_type.is_some()
            || error_kind.is_some()
            || error.is_some()
            || fingerprint.is_some()
            || partition_key.is_some()
            || event_id.is_some()
            || since.is_some()
            || until.is_some()
            || min_attempts.is_some()
            || max_attempts.is_some()
            || !ids.is_empty()
    }

    /// Refuses a change (replay, resolve, purge) over a filter that
    /// narrows nothing unless it says `all`: an empty or mistyped filter
    /// never acts on every dead letter by accident.
    pub fn for_change(&self) -> Result<(), FilterError> {
        if self.narrows() || self.all {
            return Ok(());
        }
        Err(FilterError {
            field: "all",
            reason: format!(
                "the filter matches every {} dead letter: narrow it, or set \"all\": true \
                 (--all) to act on all of them",
                self.status.as_str()
            ),
        })
    }

    /// Exactly dead letter `id`, whatever its status.
    pub fn one(id: i64) -> Self {
        Self {
            ids: vec![id],
            status: Status::All,
            ..Self::default()
        }
    }

    /// The same filter restricted to open dead letters: operations that
    /// change a dead letter (replay, resolve) act on open ones only.
    pub fn requiring_open(&self) -> Result<Self, FilterError> {
        match self.status {
            Status::Open => Ok(self.clone()),
            other => Err(FilterError {
                field: "status",
                reason: format!(
                    "only open dead letters can be acted on, not {}",
                    other.as_str()
                ),
            }),
        }
    }
}

/// A statement over `dead_letters` restricted by a [`Filter`]: the head
/// (`SELECT … FROM dead_letters WHERE`), then only the terms of the fields
/// that narrow, each value bound, then whatever the caller appends. Built
/// anew per call and not kept prepared (run it with `.persistent(false)`):
/// PostgreSQL plans it with the values, where a generic plan of a
/// prepared statement read and sorted every row after `id > $n` for each
/// page or replay batch (a replay of 200,000 ran at a fifth of its first
/// batches' speed).
pub(crate) type FilteredQuery = sqlx::QueryBuilder<sqlx::Postgres>;

impl Filter {
    /// Starts `head` (ending in `WHERE`) followed by this filter's
    /// condition; the caller may append `AND …`, `ORDER BY`, `LIMIT`.
    pub(crate) fn query(&self, head: &str) -> FilteredQuery {
        let mut query = FilteredQuery::new(head);
        self.push_condition(&mut query);
        query
    }

    /// Appends this filter's condition (`TRUE` when it narrows nothing,
    /// whatever the status) to `query`, its values bound.
    pub(crate) fn push_condition(&self, query: &mut FilteredQuery) {
        let Filter {
            group,
            event_type,
            error_kind,
            error,
            fingerprint,
            partition_key,
            event_id,
            since,
            until,
            min_attempts,
            max_attempts,
            status,
            ids,
            all: _,
        } = self;
        query.push(" TRUE");
        if let Some(group) = group {
            query
                .push(" AND consumer_group = ")
                .push_bind(group.as_str());
        }
        let texts = [
            ("event_type", event_type),
            ("error_kind", error_kind),
            ("fingerprint", fingerprint),
            ("partition_key", partition_key),
        ];
        for (column, value) in texts {
            if let Some(value) = value {
                query
                    .push(format_args!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        if let Some(error) = error {
            query
                .push(" AND strpos(lower(reason), lower(")
                .push_bind(error.clone())
                .push(")) > 0");
        }
        if let Some(event_id) = event_id {
            query.push(" AND event_id = ").push_bind(*event_id);
        }
        if let Some(since) = since {
            query.push(" AND last_failed_at >= ").push_bind(*since);
        }
        if let Some(until) = until {
            query.push(" AND last_failed_at < ").push_bind(*until);
        }
        if let Some(min_attempts) = min_attempts {
            query.push(" AND attempts >= ").push_bind(*min_attempts);
        }
        if let Some(max_attempts) = max_attempts {
            query.push(" AND attempts <= ").push_bind(*max_attempts);
        }
        if *status != Status::All {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        if !ids.is_empty() {
            query
                .push(" AND id = ANY(")
                .push_bind(ids.clone())
                .push(")");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_reads_from_json_with_the_cli_names_and_refuses_unknown_fields() {
        let filter: Filter = serde_json::from_value(serde_json::json!({
            "group": "orders", "type": "order.placed", "status": "all", "ids": [1, 2]
        }))
        .expect("valid");
        assert_eq!(filter.group, Some(ConsumerGroup::Orders));
        assert_eq!(filter.event_type.as_deref(), Some("order.placed"));
        assert_eq!(filter.status, Status::All);
        assert_eq!(filter.ids, vec![1, 2]);
        let unknown = serde_json::from_value::<Filter>(serde_json::json!({"grup": "orders"}));
        assert!(unknown.is_err_and(|error| error.to_string().contains("grup")));
        let bad_group = serde_json::from_value::<Filter>(serde_json::json!({"group": "x"}));
        assert!(bad_group.is_err());
    }

    #[test]
    fn a_filter_with_nul_too_many_ids_or_negative_attempts_is_refused_naming_the_field() {
        let nul = Filter {
            error: Some("a\0b".to_owned()),
            ..Filter::default()
        };
        assert_eq!(nul.validate().map_err(|error| error.field), Err("error"));
        let ids = Filter {
            ids: vec![1; MAX_FILTER_IDS + 1],
            ..Filter::default()
        };
        assert_eq!(ids.validate().map_err(|error| error.field), Err("ids"));
        let now = Utc::now();
        let range = Filter {
            since: Some(now),
            until: Some(now),
            ..Filter::default()
        };
        assert!(range.validate().is_ok(), "an empty range matches nothing");
        let negative = Filter {
            min_attempts: Some(-1),
            ..Filter::default()
        };
        assert_eq!(
            negative.validate().map_err(|error| error.field),
            Err("min_attempts")
        );
        assert!(Filter::default().validate().is_ok());
        let replayed = Filter {
            status: Status::Replayed,
            ..Filter::default()
        };
        assert!(replayed.requiring_open().is_err());
    }
}
