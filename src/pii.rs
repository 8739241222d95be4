//! Redaction of personal data, and escaping of text a client chose, in logs.
//!
//! Client and peer IP addresses are personal data. Wrap them in [`Pii`] whenever they reach a
//! log line: they print as `<redacted>` unless the operator set `log.log_ips = true`.
//!
//! Text that arrives from outside (user ids, usernames, anything of a request) goes through
//! [`Escaped`] on its way into a log line, even where the relay has already checked its
//! characters: a line break, an escape sequence or a NUL cannot forge or hide a log line.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

static SHOW: AtomicBool = AtomicBool::new(false);

/// Sets whether [`Pii`] values print in clear (from `log.log_ips`).
pub fn set_show_personal_data(show: bool) {
    SHOW.store(show, Ordering::Relaxed);
}

/// A value that is personal data: redacted in `Display` and `Debug` unless enabled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Pii<T>(pub T);

impl<T: fmt::Display> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// Text from outside, written with control characters, quotes, backslashes and everything
/// outside ASCII escaped (`\n`, `\u{1b}`, `\u{e9}`), as [`char::escape_default`] does, without
/// the surrounding quotes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_ascii_graphic() || c == ' ' {
                if c == '\\' || c == '"' {
                    f.write_str("\\")?;
                }
                fmt::Write::write_char(f, c)?;
            } else {
                write!(f, "{}", c.escape_default())?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl<T: fmt::Debug> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if SHOW.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("<redacted>")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_text_cannot_break_a_line_or_hide_bytes() {
        let shown = Escaped("bob\nINFO forged\u{1b}[2K\0é\"\\ ok").to_string();
        assert_eq!(shown, "bob\\nINFO forged\\u{1b}[2K\\u{0}\\u{e9}\\\"\\\\ ok");
        assert!(shown.chars().all(|c| c.is_ascii_graphic() || c == ' '));
        assert_eq!(format!("{:?}", Escaped("a\tb")), "\"a\\tb\"");
        assert_eq!(Escaped("1700000000:alice").to_string(), "1700000000:alice");
    }
}
