//! `${VAR}` and `${VAR:-default}` in `mend.toml`, so secrets and per-host
//! values stay out of the file.
//!
//! Expansion reads the TOML lexically, so it knows where it is:
//! - inside a double-quoted string, the value is escaped for it
//!   (`password = "${DB_PASSWORD}"`);
//! - as a bare value it is typed after substitution: an integer, float or
//!   boolean stays one (`max_concurrent = ${MEND_CONCURRENCY:-8}`,
//!   `dry_run = ${MEND_DRY_RUN:-false}`), anything else becomes a string;
//! - inside comments and single-quoted (literal) strings nothing is
//!   expanded: a comment may show `${...}`, and `'...'` means literal.
//!
//! `$${` is a literal `${`. An unset variable without a default is an
//! error naming the key and the variable.

/// A variable that could not be substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError {
    pub name: String,
    /// Byte offset of the `${` in the original text.
    pub offset: usize,
    /// The key it is the value of, as far as the scanner can tell.
    pub key: String,
    pub message: String,
}

/// The expanded text, and where its bytes came from.
#[derive(Debug, Clone, Default)]
pub struct Expanded {
    pub text: String,
    /// (expanded start, expanded end, original start, original end) of each
    /// substitution, in order.
    subs: Vec<(usize, usize, usize, usize)>,
}

impl Expanded {
    /// The offset in the original text of `offset` in the expanded text.
    pub fn original(&self, offset: usize) -> usize {
        let i = self.subs.partition_point(|s| s.0 <= offset);
        if i == 0 {
            return offset;
        }
        let (es, ee, os, oe) = self.subs[i - 1];
        if offset < ee {
            os
        } else {
            let _ = es;
            offset - ee + oe
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Comment,
    Basic,
    MultiBasic,
    Literal,
    MultiLiteral,
}

/// Tracks which key the scanner is in, for error messages.
#[derive(Default)]
struct Keys {
    table: String,
    counts: std::collections::BTreeMap<String, usize>,
    key: String,
    line_start: bool,
    line_key: String,
}

impl Keys {
    fn header(&mut self, raw: &str) {
        let array = raw.starts_with("[[");
        let name: String = raw
            .trim_matches(|c| c == '[' || c == ']')
            .split('.')
            .map(|p| p.trim().trim_matches('"'))
            .collect::<Vec<_>>()
            .join(".");
        if array {
            // Nested arrays of tables hang off the parent's latest element.
            let (parent, leaf) = match name.rsplit_once('.') {
                Some((p, l)) => (self.resolve(p), l.to_string()),
                None => (String::new(), name.clone()),
            };
            let base = if parent.is_empty() {
                leaf
            } else {
                format!("{parent}.{leaf}")
            };
            let n = self.counts.entry(base.clone()).or_insert(0);
            self.table = format!("{base}[{n}]");
            *n += 1;
        } else {
            self.table = self.resolve(&name);
        }
    }

    /// `policy.step` → `policy[0].step` when `policy` is an array.
    fn resolve(&self, path: &str) -> String {
        let mut out = String::new();
        for part in path.split('.') {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
            if let Some(n) = self.counts.get(&out) {
                out = format!("{out}[{}]", n.saturating_sub(1));
            }
        }
        out
    }

    fn full(&self) -> String {
        match (self.table.is_empty(), self.key.is_empty()) {
            (true, _) => self.key.clone(),
            (false, true) => self.table.clone(),
            (false, false) => format!("{}.{}", self.table, self.key),
        }
    }
}

/// Expands every reference, or reports every one that cannot be.
pub fn expand(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Expanded, Vec<EnvError>> {
    let bytes = text.as_bytes();
    let mut out = Expanded {
        text: String::with_capacity(text.len()),
        subs: Vec::new(),
    };
    let mut errors = Vec::new();
    let mut mode = Mode::Normal;
    let mut keys = Keys {
        line_start: true,
        ..Keys::default()
    };
    let mut i = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let c = rest.chars().next().expect("in bounds");
        match mode {
            Mode::Comment => {
                if c == '\n' {
                    mode = Mode::Normal;
                    keys.line_start = true;
                    keys.line_key.clear();
                }
            }
            Mode::Literal if c == '\'' || c == '\n' => mode = Mode::Normal,
            Mode::MultiLiteral if rest.starts_with("'''") => {
                out.text.push_str("'''");
                i += 3;
                mode = Mode::Normal;
                continue;
            }
            Mode::Literal | Mode::MultiLiteral => {}
            Mode::Basic | Mode::MultiBasic => {
                if c == '\\' {
                    // An escape: copy it and the escaped character.
                    let next = rest[1..].chars().next().map_or(0, char::len_utf8);
                    out.text.push_str(&rest[..1 + next]);
                    i += 1 + next;
                    continue;
                }
                if mode == Mode::Basic && (c == '"' || c == '\n') {
                    mode = Mode::Normal;
                } else if mode == Mode::MultiBasic && rest.starts_with("\"\"\"") {
                    out.text.push_str("\"\"\"");
                    i += 3;
                    mode = Mode::Normal;
                    continue;
                } else if let Some(n) =
                    reference(text, i, true, &keys, &lookup, &mut out, &mut errors)
                {
                    i += n;
                    continue;
                }
            }
            Mode::Normal => {
                if keys.line_start && c == '[' {
                    let end = rest.find('\n').unwrap_or(rest.len());
                    let line = rest[..end].split('#').next().unwrap_or("").trim();
                    keys.header(line);
                    keys.key.clear();
                }
                if !c.is_whitespace() {
                    keys.line_start = false;
                }
                match c {
                    '\n' => {
                        keys.line_start = true;
                        keys.line_key.clear();
                    }
                    '#' => mode = Mode::Comment,
                    '=' if !keys.line_key.trim().is_empty() => {
                        keys.key = keys.line_key.trim().trim_matches('"').to_string();
                        keys.line_key.clear();
                    }
                    '"' if rest.starts_with("\"\"\"") => {
                        out.text.push_str("\"\"\"");
                        i += 3;
                        mode = Mode::MultiBasic;
                        continue;
                    }
                    '"' => mode = Mode::Basic,
                    '\'' if rest.starts_with("'''") => {
                        out.text.push_str("'''");
                        i += 3;
                        mode = Mode::MultiLiteral;
                        continue;
                    }
                    '\'' => mode = Mode::Literal,
                    '$' => {
                        if let Some(n) =
                            reference(text, i, false, &keys, &lookup, &mut out, &mut errors)
                        {
                            i += n;
                            continue;
                        }
                    }
                    '[' | ']' | '{' | '}' | ',' => {}
                    c if keys.line_start || !keys.line_key.is_empty() || c.is_alphanumeric() => {
                        keys.line_key.push(c);
                    }
                    _ => {}
                }
            }
        }
        out.text.push(c);
        i += c.len_utf8();
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Expands the reference at `at`, if there is one: returns the bytes of
/// the original it consumed.
fn reference(
    text: &str,
    at: usize,
    quoted: bool,
    keys: &Keys,
    lookup: &impl Fn(&str) -> Option<String>,
    out: &mut Expanded,
    errors: &mut Vec<EnvError>,
) -> Option<usize> {
    let rest = &text[at..];
    if rest.starts_with("$${") {
        out.text.push_str("${");
        return Some(3);
    }
    let body = rest.strip_prefix("${")?;
    let end = body.find('}')?;
    let inner = &body[..end];
    let (name, default) = match inner.split_once(":-") {
        Some((n, d)) => (n, Some(d)),
        None => (inner, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return None;
    }
    let consumed = 2 + end + 1;
    let value = lookup(name).or_else(|| default.map(str::to_string));
    let start = out.text.len();
    match value {
        Some(v) if quoted => out.text.push_str(&escape(&v)),
        Some(v) if v.contains(['\n', '\r']) => errors.push(EnvError {
            name: name.to_string(),
            offset: at,
            key: keys.full(),
            message: format!(
                "environment variable `{name}` holds a line break, which a bare value cannot: quote the reference (\"${{{name}}}\")"
            ),
        }),
        Some(v) => out.text.push_str(&typed(&v)),
        None => errors.push(EnvError {
            name: name.to_string(),
            offset: at,
            key: keys.full(),
            message: format!(
                "environment variable `{name}` is not set (give a default with `${{{name}:-value}}`)"
            ),
        }),
    }
    out.subs.push((start, out.text.len(), at, at + consumed));
    Some(consumed)
}

/// A bare value as TOML: numbers and booleans as themselves, the rest as a
/// string.
fn typed(v: &str) -> String {
    let t = v.trim();
    let scalar = t == "true"
        || t == "false"
        || (!t.is_empty() && t.parse::<i64>().is_ok())
        || (t.parse::<f64>().is_ok_and(f64::is_finite) && t.contains(['.', 'e', 'E']));
    if scalar {
        t.to_string()
    } else {
        format!("\"{}\"", escape(v))
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
            "PORT" => Some("5432".into()),
            "RATIO" => Some("0.5".into()),
            "YES" => Some("true".into()),
            "WORD" => Some("web app".into()),
            _ => None,
        }
    }

    fn ok(text: &str) -> String {
        expand(text, env).unwrap().text
    }

    #[test]
    fn strings_are_escaped_and_bare_values_typed() {
        assert_eq!(ok("u = \"${USER}\""), "u = \"mend\"");
        assert_eq!(ok("p = \"${TRICKY}\""), "p = \"a\\\"b\\\\c\"");
        assert_eq!(ok("port = ${PORT}"), "port = 5432");
        assert_eq!(ok("r = ${RATIO}"), "r = 0.5");
        assert_eq!(ok("on = ${YES}"), "on = true");
        assert_eq!(ok("w = ${WORD}"), "w = \"web app\"");
        let t: toml::Table = toml::from_str(&ok("p = \"${TRICKY}\"\nport = ${PORT}")).unwrap();
        assert_eq!(t["p"].as_str(), Some("a\"b\\c"));
        assert_eq!(t["port"].as_integer(), Some(5432));
    }

    #[test]
    fn defaults_apply_when_unset() {
        assert_eq!(ok("n = ${NOPE:-8}"), "n = 8");
        assert_eq!(ok("s = \"${NOPE:-x y}\""), "s = \"x y\"");
        assert_eq!(ok("s = \"${NOPE:-}\""), "s = \"\"");
        assert_eq!(ok("u = \"${USER:-other}\""), "u = \"mend\"");
    }

    #[test]
    fn comments_and_literal_strings_are_left_alone() {
        assert_eq!(
            ok("# set ${NOPE} first\na = 'raw ${NOPE}'\nb = '''\n${NOPE}\n'''"),
            "# set ${NOPE} first\na = 'raw ${NOPE}'\nb = '''\n${NOPE}\n'''"
        );
        assert_eq!(
            ok("x = \"$${USER} $5 \\\"${USER}\\\"\""),
            "x = \"${USER} $5 \\\"mend\\\"\""
        );
    }

    #[test]
    fn unset_variables_name_the_key() {
        let err = expand(
            "[engine]\ninterval = \"1s\"\n\n[[check]]\nname = \"a\"\n[[check]]\nname = \"b\"\nconfig = { token = \"${NOPE}\" }\n",
            env,
        )
        .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].name, "NOPE");
        assert_eq!(err[0].key, "check[1].token");
        let err = expand(
            "[[policy]]\n[[policy.step]]\n[[policy.step]]\nx = ${A}\n",
            env,
        )
        .unwrap_err();
        assert_eq!(err[0].key, "policy[0].step[1].x");
    }

    #[test]
    fn offsets_map_back_to_the_original() {
        let e = expand("a = \"${USER}\" # x\nb = 1", env).unwrap();
        // `b` in the expanded text is where `b` was.
        let b = e.text.find('b').unwrap();
        assert_eq!(
            e.original(b),
            "a = \"${USER}\" # x\nb = 1".find('b').unwrap()
        );
        // Inside the substitution: the reference's start.
        assert_eq!(e.original(6), 5);
    }
}
