//! Text from the outside world (a header, an error message, a name given
//! by an operator) printed to an operator's terminal: control characters
//! and bidirectional overrides are shown escaped (`\u{1b}`), never sent, so
//! that a dead letter cannot move the cursor, clear the screen, retitle the
//! window or reorder what the operator reads.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1) and bidirectional
/// control escaped as `\u{…}`; borrowed when there is none.
pub fn for_terminal(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for character in text.chars() {
        if needs_escape(character) {
            shown.extend(character.escape_unicode());
        } else {
            shown.push(character);
        }
    }
    Cow::Owned(shown)
}

fn needs_escape(character: char) -> bool {
    character.is_control()
        || matches!(character, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_reach_the_terminal_as_text_and_plain_text_is_untouched() {
        let hostile = "order\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}x\u{202e}cba\r\n";
        let shown = for_terminal(hostile);
        assert!(!shown.chars().any(needs_escape), "{shown}");
        assert_eq!(
            shown,
            "order\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\u{9b}x\\u{202e}cba\\u{d}\\u{a}"
        );
        assert!(matches!(for_terminal("order.placed — ü"), Cow::Borrowed(_)));
    }
}
