//! Text that comes from plugins, made safe to keep, log and print.

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Plugin-provided text made safe for a log line or a terminal: control
/// characters (newlines that would forge a log line, ANSI escapes that
/// would drive the terminal) are written out as `\n`, `\u{1b}`...
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_neutralises_control_characters() {
        assert_eq!(super::escape("plain"), "plain");
        assert_eq!(
            super::escape("a\nINFO forged\x1b[31mred"),
            "a\\nINFO forged\\u{1b}[31mred"
        );
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(super::truncate("héllo", 2), "h");
        assert_eq!(super::truncate("hello", 10), "hello");
    }
}
