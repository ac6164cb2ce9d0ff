//! The history of an event's failed attempts, carried in message headers
//! and signed by the runtime: a history is believed only with a valid
//! HMAC-SHA256 over the message body and the history, keyed with a secret
//! that only the workers hold (made once in the database, see
//! `migrations/*_runtime_keys.sql`). A producer that sets these headers
//! itself (to skip retries or fake a history) gets a first attempt.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use lapin::types::{AMQPValue, FieldTable, LongString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Header with the JSON array of failed attempts.
pub const ATTEMPT_LOG_HEADER: &str = "x-switchyard-attempts";
/// Header with the number of failed attempts so far.
pub const ATTEMPT_COUNT_HEADER: &str = "x-switchyard-attempt-count";
/// Header with the last error's kind and message.
pub const LAST_ERROR_HEADER: &str = "x-switchyard-last-error";
/// Header with the hex HMAC-SHA256 of the body and the attempt log.
pub const ATTEMPT_SIGNATURE_HEADER: &str = "x-switchyard-attempts-signature";

/// The workers' secret for signing attempt histories.
#[derive(Clone)]
pub struct AttemptKey([u8; 32]);

impl std::fmt::Debug for AttemptKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("AttemptKey(…)")
    }
}

impl AttemptKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The database's key (made by the migrations).
    pub async fn load(pool: &sqlx::PgPool) -> Result<Self, sqlx::Error> {
        let key: Vec<u8> =
            sqlx::query_scalar("SELECT key FROM runtime_keys WHERE name = 'attempt_history'")
                .fetch_one(pool)
                .await?;
        let bytes = <[u8; 32]>::try_from(key.as_slice()).map_err(|_| {
            sqlx::Error::Protocol("runtime key attempt_history is not 32 bytes".into())
        })?;
        Ok(Self(bytes))
    }

    fn signature(&self, body: &[u8], log: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(&(body.len() as u64).to_be_bytes());
        mac.update(body);
        mac.update(log);
        mac
    }
}

/// Whether the attempt headers of a delivery were believed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryTrust {
    /// No attempt log: a first delivery.
    None,
    /// A log signed by the runtime.
    Signed,
    /// A log without a valid signature (written by someone else): ignored.
    Refused,
}

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
    /// Reads the history of the message `body` from its headers. Only a
    /// log signed with `key` for this body is believed; a missing, garbled
    /// or unsigned one means no earlier attempt.
    pub fn from_headers(
        headers: Option<&FieldTable>,
        body: &[u8],
        key: &AttemptKey,
    ) -> (Self, HistoryTrust) {
        let text = |name: &str| {
            headers
                .and_then(|table| table.inner().get(name))
                .and_then(|value| match value {
                    AMQPValue::LongString(text) => Some(text.as_bytes().to_vec()),
                    _ => None,
                })
        };
        let Some(log) = text(ATTEMPT_LOG_HEADER) else {
            return (Self::default(), HistoryTrust::None);
        };
        let signed = text(ATTEMPT_SIGNATURE_HEADER)
            .and_then(|signature| hex::decode(signature).ok())
            .is_some_and(|signature| key.signature(body, &log).verify_slice(&signature).is_ok());
        match serde_json::from_slice(&log) {
            Ok(records) if signed => (Self { records }, HistoryTrust::Signed),
            _ => (Self::default(), HistoryTrust::Refused),
        }
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

    /// Writes the history of the message `body` into `headers`, signed
    /// with `key`, replacing older values.
    pub fn write_to(&self, headers: &mut FieldTable, body: &[u8], key: &AttemptKey) {
        let log = serde_json::to_string(&self.records).unwrap_or_else(|_| "[]".to_owned());
        let signature = hex::encode(key.signature(body, log.as_bytes()).finalize().into_bytes());
        headers.insert(
            ATTEMPT_SIGNATURE_HEADER.into(),
            AMQPValue::LongString(LongString::from(signature)),
        );
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

    const BODY: &[u8] = br#"{"id":"1"}"#;

    fn key() -> AttemptKey {
        AttemptKey::from_bytes([7; 32])
    }

    fn one_failure() -> AttemptHistory {
        AttemptHistory::default().with(AttemptRecord {
            at: Utc::now(),
            worker: "w1".into(),
            kind: "order_unknown".into(),
            message: "not yet".into(),
        })
    }

    #[test]
    fn a_history_survives_a_trip_through_headers() {
        let history = one_failure();
        let mut headers = FieldTable::default();
        history.write_to(&mut headers, BODY, &key());
        assert_eq!(
            AttemptHistory::from_headers(Some(&headers), BODY, &key()),
            (history.clone(), HistoryTrust::Signed)
        );
        assert_eq!(history.current_attempt(), 2);
    }

    #[test]
    fn garbage_headers_mean_a_first_attempt() {
        let mut headers = FieldTable::default();
        headers.insert(
            ATTEMPT_LOG_HEADER.into(),
            AMQPValue::LongString("{nope".into()),
        );
        let (history, trust) = AttemptHistory::from_headers(Some(&headers), BODY, &key());
        assert_eq!(
            (history.current_attempt(), trust),
            (1, HistoryTrust::Refused)
        );
        let (history, trust) = AttemptHistory::from_headers(None, BODY, &key());
        assert_eq!((history.current_attempt(), trust), (1, HistoryTrust::None));
    }

    #[test]
    fn a_history_is_refused_unsigned_with_another_key_on_another_body_or_altered() {
        let mut signed = FieldTable::default();
        one_failure().write_to(&mut signed, BODY, &key());
        let refused = |headers: &FieldTable, body: &[u8], key: &AttemptKey| {
            AttemptHistory::from_headers(Some(headers), body, key)
                == (AttemptHistory::default(), HistoryTrust::Refused)
        };
        assert!(refused(&signed, BODY, &AttemptKey::from_bytes([8; 32])));
        assert!(refused(&signed, br#"{"id":"2"}"#, &key()));
        let mut unsigned = FieldTable::default();
        for (name, value) in signed.inner() {
            if name.as_str() != ATTEMPT_SIGNATURE_HEADER {
                unsigned.insert(name.clone(), value.clone());
            }
        }
        assert!(refused(&unsigned, BODY, &key()));
        let mut altered = signed.clone();
        let longer = one_failure().with(one_failure().records[0].clone());
        let log = serde_json::to_string(&longer.records).unwrap();
        altered.insert(ATTEMPT_LOG_HEADER.into(), AMQPValue::LongString(log.into()));
        assert!(refused(&altered, BODY, &key()));
    }
}
