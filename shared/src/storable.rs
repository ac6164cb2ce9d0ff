//! Text and JSON that PostgreSQL can always store: the one place where
//! anything that came from a message (a reason quoting a field path, a
//! header, an attempt log, a body shown as text) is made storable on its
//! way into the database.
//!
//! PostgreSQL's `text` and `jsonb` refuse NUL (U+0000), in JSON keys as in
//! values (SQLSTATE 22P05 for jsonb, 22021 for text): one such character in
//! a dead letter's field path made the dead letter unstorable, and its
//! batch was held and tried again for good. Rust strings hold no lone
//! surrogate and no invalid UTF-8, so NUL is the one character to escape;
//! it is written as the six characters `\u0000`, as JSON would show it.

use std::borrow::Cow;

/// `text` with each NUL written as the six characters `\u0000`.
pub fn text(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\\u0000"))
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` made storable ([`text`]), owned.
pub fn string(text: &str) -> String {
    self::text(text).into_owned()
}

/// `value` with every object key and string made storable ([`text`]),
/// however deep.
pub fn json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(text) => Value::String(storable_owned(text)),
        Value::Array(items) => Value::Array(items.into_iter().map(json).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (storable_owned(key), json(value)))
                .collect(),
        ),
        other => other,
    }
}

/// Bytes as a JSON value: the text itself when it is UTF-8 without NUL,
/// otherwise `{"bytes_hex": "…"}` — exact and reversible.
pub fn bytes(bytes: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => serde_json::Value::from(text),
        _ => serde_json::json!({ "bytes_hex": hex::encode(bytes) }),
    }
}

fn storable_owned(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\\u0000")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_escaped_in_text_and_in_json_keys_and_values_at_any_depth() {
        assert_eq!(text("a\0b"), "a\\u0000b");
        assert!(matches!(text("plain"), Cow::Borrowed("plain")));
        let value = serde_json::json!({"\u{0}": [{"k\u{0}": "v\u{0}"}], "n": 1});
        let stored = json(value);
        assert_eq!(
            stored,
            serde_json::json!({"\\u0000": [{"k\\u0000": "v\\u0000"}], "n": 1})
        );
    }

    #[test]
    fn bytes_that_are_not_storable_text_become_hex() {
        assert_eq!(bytes(b"ok"), serde_json::json!("ok"));
        assert_eq!(bytes(b"x\0y"), serde_json::json!({"bytes_hex": "780079"}));
        assert_eq!(bytes(&[0xff]), serde_json::json!({"bytes_hex": "ff"}));
    }
}
