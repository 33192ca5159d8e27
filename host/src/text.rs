//! Text from outside the host (a plugin's log lines, risk reasons, names and problems; a
//! metric store's error messages) made safe to print: one line, no control characters, a
//! bounded length. An operator reading Augur's stdout, stderr or `host validate` is never
//! shown a line Augur did not write: a `\n` cannot start a forged record and an escape
//! sequence cannot recolour or erase the terminal.
//!
//! The JSONL audit keeps the text as it came (JSON escapes it); this is for terminal lines.

use std::borrow::Cow;
use std::fmt::Write;

/// The most characters of one outside text shown on a line; the rest is counted, not shown.
pub const MAX_SHOWN_CHARS: usize = 512;

/// `text` as one safe line of at most `MAX_SHOWN_CHARS` characters: each control character
/// (C0, DEL, C1) and each bidirectional-override or line/paragraph separator is written as
/// its escape (`\n`, `\u{1b}`), so that nothing in it can end the line or steer the terminal.
pub fn shown(text: &str) -> Cow<'_, str> {
    if text.len() <= MAX_SHOWN_CHARS && !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().min(MAX_SHOWN_CHARS * 2));
    let mut count = 0;
    for (at, c) in text.char_indices() {
        if count == MAX_SHOWN_CHARS {
            let _ = write!(out, "… ({} more bytes)", text.len() - at);
            break;
        }
        push_safe(&mut out, c);
        count += 1;
    }
    Cow::Owned(out)
}

/// `line` with each unsafe character escaped as in `shown`, at any length: for a line the
/// host composed from parts, some of them from outside (whose own length was capped).
pub fn one_line(line: String) -> String {
    if !line.chars().any(unsafe_char) {
        return line;
    }
    line.chars().fold(String::with_capacity(line.len() + 16), |mut out, c| {
        push_safe(&mut out, c);
        out
    })
}

/// `c`, or its escape if it is unsafe on a terminal line.
fn push_safe(out: &mut String, c: char) {
    if unsafe_char(c) {
        out.extend(c.escape_default());
    } else {
        out.push(c);
    }
}

fn unsafe_char(c: char) -> bool {
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_kept_as_it_is() {
        assert!(matches!(shown("scale to 4: cpu p90 1.2 cores > 0.8"), Cow::Borrowed(_)));
        assert_eq!(shown("naïve café"), "naïve café");
    }

    #[test]
    fn controls_are_escaped_so_no_line_can_be_forged() {
        let forged = "ok\n2026-12-01T00:00:00Z  INFO augur: executed scale\x1b[2K\r\u{202e}";
        let safe = shown(forged);
        assert!(!safe.chars().any(|c| c.is_control()), "{safe}");
        assert_eq!(safe, "ok\\n2026-12-01T00:00:00Z  INFO augur: executed scale\\u{1b}[2K\\r\\u{202e}");
    }

    #[test]
    fn a_composed_line_is_escaped_whole() {
        assert_eq!(one_line("restart-pod web-0\nFORGED\x1b[31m".into()), "restart-pod web-0\\nFORGED\\u{1b}[31m");
        assert_eq!(one_line("plain".into()), "plain");
    }

    #[test]
    fn long_text_is_capped_and_says_how_much_was_left_out() {
        let long = "é".repeat(2000);
        let safe = shown(&long);
        assert_eq!(safe.chars().count(), MAX_SHOWN_CHARS + "… (2976 more bytes)".chars().count());
        assert!(safe.ends_with("… (2976 more bytes)"), "{safe}");
    }
}
