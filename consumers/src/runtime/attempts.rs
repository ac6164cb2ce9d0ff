//! The history of an event's failed attempts, carried in message headers.

use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::{Deserialize, Serialize};

/// Header with the JSON array of failed attempts.
pub const ATTEMPT_LOG_HEADER: &str = "x-switchyard-attempts";
/// Header with the number of failed attempts so far.
pub const ATTEMPT_COUNT_HEADER: &str = "x-switchyard-attempt-count";
/// Header with the last error's kind and message.
pub const LAST_ERROR_HEADER: &str = "x-switchyard-last-error";

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// When it failed.
    pub at: DateTime<Utc>,
    /// Which worker tried.
    pub worker: String,
    /// Stable error kind (`order_unknown`).
    pub kind: String,
    /// The error's message.
    pub message: String,
}

/// Every failed attempt of one event, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptHistory {
    /// The records.
    pub records: Vec<AttemptRecord>,
}

impl AttemptHistory {
    /// Reads the history from delivery headers; missing or unreadable
    /// headers mean no earlier attempt.
    pub fn from_headers(headers: Option<&FieldTable>) -> Self {
        let records = headers
            .and_then(|table| table.inner().get(ATTEMPT_LOG_HEADER))
            .and_then(|value| match value {
                AMQPValue::LongString(text) => serde_json::from_slice(text.as_bytes()).ok(),
                _ => None,
            })
            .unwrap_or_default();
        Self { records }
    }

    /// The number of the current attempt (1 for a first delivery).
    pub fn current_attempt(&self) -> u32 {
        self.records.len() as u32 + 1
    }

    /// The history with one more failure.
    pub fn with(&self, record: AttemptRecord) -> Self {
        let mut records = self.records.clone();
        records.push(record);
        Self { records }
    }

    /// Writes the history into `headers`, replacing older values.
    pub fn write_to(&self, headers: &mut FieldTable) {
        let log = serde_json::to_string(&self.records).unwrap_or_else(|_| "[]".to_owned());
        headers.insert(
            ATTEMPT_LOG_HEADER.into(),
            AMQPValue::LongString(LongString::from(log)),
        );
        headers.insert(
            ATTEMPT_COUNT_HEADER.into(),
            AMQPValue::LongLongInt(self.records.len() as i64),
        );
        if let Some(last) = self.records.last() {
            let text = format!("{}: {}", last.kind, last.message);
            headers.insert(
                LAST_ERROR_HEADER.into(),
                AMQPValue::LongString(LongString::from(text)),
            );
        }
    }

    /// The history as JSON for the dead-letter store.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&self.records).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_survives_a_trip_through_headers() {
        let history = AttemptHistory::default().with(AttemptRecord {
            at: Utc::now(),
            worker: "w1".into(),
            kind: "order_unknown".into(),
            message: "not yet".into(),
        });
        let mut headers = FieldTable::default();
        history.write_to(&mut headers);
        assert_eq!(AttemptHistory::from_headers(Some(&headers)), history);
        assert_eq!(history.current_attempt(), 2);
    }

    #[test]
    fn garbage_headers_mean_a_first_attempt() {
        let mut headers = FieldTable::default();
        headers.insert(
            ATTEMPT_LOG_HEADER.into(),
            AMQPValue::LongString("{nope".into()),
        );
        assert_eq!(
            AttemptHistory::from_headers(Some(&headers)).current_attempt(),
            1
        );
    }
}
