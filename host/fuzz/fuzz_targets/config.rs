//! The config loader: TOML with positions and `${VAR}` expansion.
//! Property: it never panics, and every error is positioned within the
//! file it read (a line of it, a column of that line).
#![no_main]

use std::path::Path;

/// `${VAR}` resolves by its name: a few are unset (an error), the rest
/// expand to values that need escaping, retyping or look like references.
fn env(name: &str) -> Option<String> {
    const VALUES: [&str; 10] = [
        "8",
        "true",
        "1.5",
        "",
        "a\"b\\c\nd",
        "${NESTED}",
        "it's",
        "é\u{1b}[2J",
        "-3",
        "x y",
    ];
    if name.starts_with("UNSET") {
        return None;
    }
    let h = name
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
    Some(VALUES[h % VALUES.len()].to_string())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let file = Path::new("fuzz.toml");
    let parsed = mend::config::parse_partial(text, file, env);
    if parsed.config.is_none() {
        assert!(!parsed.errors.is_empty(), "no config and no error");
    }
    let lines: Vec<&str> = text.split('\n').collect();
    for e in &parsed.errors {
        assert_eq!(e.file, file);
        assert!(!e.message.is_empty(), "an error without a message: {e:?}");
        let Some((line, col)) = e.position else {
            panic!("an error without a position: {e}");
        };
        assert!(
            line >= 1 && line <= lines.len(),
            "line {line} of {}: {e}",
            lines.len()
        );
        let width = lines[line - 1].chars().count();
        assert!(col >= 1 && col <= width + 1, "column {col} of {width}: {e}");
    }
});
