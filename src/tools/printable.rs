//! Text from outside (a customer's profile name, a message, an id) made safe for a terminal:
//! nothing in it can move the cursor, clear the screen, set a window title, write the clipboard
//! (OSC 52), ring the bell or start a line of its own. Every human-readable output passes its
//! outside text through [`escape`]; JSON output stays exact (its encoder escapes controls).

use std::borrow::Cow;
use std::fmt::Write;

/// `s` with every control character written as an escape: `\n`, `\r`, `\t` and `\e` (ESC) by
/// name, the rest as `\u{…}`. C0 and C1 controls, DEL, and the Unicode line and paragraph
/// separators and bidirectional overrides (which reorder what a terminal shows) are escaped;
/// a backslash stays as it is. Borrows when nothing needs escaping.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acted_on) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{1b}' => out.push_str("\\e"),
            c if acted_on(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether a terminal acts on `c` rather than showing it.
fn acted_on(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_a_terminal_acts_on_gets_through() {
        let hostile = "Ana\u{1b}[2J\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZWNobyBoaQ==\u{7}\r\n2026 conversation.released by ana\u{9b}\u{202e}";
        let shown = escape(hostile);
        assert!(!shown.chars().any(acted_on), "{shown}");
        assert!(!shown.chars().any(char::is_control), "{shown}");
        assert_eq!(
            shown,
            "Ana\\e[2J\\e]0;pwned\\u{7}\\e]52;c;ZWNobyBoaQ==\\u{7}\\r\\n2026 conversation.released by ana\\u{9b}\\u{202e}"
        );
        // Plain text, accents and emoji are left alone (and not copied).
        assert!(matches!(
            escape("José 📱 ¿hola?"),
            Cow::Borrowed("José 📱 ¿hola?")
        ));
    }
}
