//! `${VAR}` interpolation, so secrets stay out of `mend.toml`.
//!
//! Expansion happens on the raw text before parsing, and the value is
//! escaped for a TOML basic string: write references inside double quotes
//! (`password = "${DB_PASSWORD}"`). `$${` is a literal `${`.

/// A reference to a variable that is not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVar {
    pub name: String,
    /// Byte offset of the `${` in the input.
    pub offset: usize,
}

pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<MissingVar>> {
    let mut out = String::with_capacity(text.len());
    let mut missing = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
            offset += i + 3;
            continue;
        }
        if let Some(body) = after.strip_prefix("${")
            && let Some(end) = body.find('}')
        {
            let name = &body[..end];
            let valid =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if valid {
                match lookup(name) {
                    Some(v) => out.push_str(&escape(&v)),
                    None => missing.push(MissingVar {
                        name: name.to_string(),
                        offset: offset + i,
                    }),
                }
                rest = &body[end + 1..];
                offset += i + 2 + end + 1;
                continue;
            }
        }
        out.push('$');
        rest = &after[1..];
        offset += i + 1;
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(missing)
    }
}

fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c.is_control() => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "USER" => Some("mend".into()),
            "TRICKY" => Some("a\"b\\c".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_escapes_and_reports_missing() {
        assert_eq!(interpolate("u = \"${USER}\"", env).unwrap(), "u = \"mend\"");
        assert_eq!(
            interpolate("p = \"${TRICKY}\"", env).unwrap(),
            "p = \"a\\\"b\\\\c\""
        );
        assert_eq!(
            interpolate("x = \"$${USER} $5\"", env).unwrap(),
            "x = \"${USER} $5\""
        );
        let err = interpolate("a = 1\nb = \"${NOPE}\"", env).unwrap_err();
        assert_eq!(
            err,
            vec![MissingVar {
                name: "NOPE".into(),
                offset: 11
            }]
        );
    }

    #[test]
    fn the_result_parses_as_toml() {
        let text = interpolate("p = \"${TRICKY}\"", env).unwrap();
        let t: toml::Table = toml::from_str(&text).unwrap();
        assert_eq!(t["p"].as_str(), Some("a\"b\\c"));
    }
}
