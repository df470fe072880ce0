//! What makes a cached value valid. Pure functions, unit-tested natively.

use serde::Deserialize;
use serde::de::IgnoredAny;

/// How a cached value must parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validate {
    /// One complete JSON document (an empty or truncated one is corrupt).
    Json,
}

impl Validate {
    /// Why `value` is invalid, if it is.
    pub fn check(self, value: &[u8]) -> Option<&'static str> {
        match self {
            Validate::Json => (!is_json(value)).then_some("invalid JSON"),
        }
    }

    /// Like [`Validate::check`], streaming from a reader. An I/O error is
    /// returned as such, not as "invalid".
    pub fn check_reader(self, r: impl std::io::Read) -> std::io::Result<Option<&'static str>> {
        match self {
            Validate::Json => {
                let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::new(r));
                match IgnoredAny::deserialize(&mut de).and_then(|_| de.end()) {
                    Ok(()) => Ok(None),
                    Err(e) if e.is_io() => Err(std::io::Error::other(e.to_string())),
                    Err(_) => Ok(Some("invalid JSON")),
                }
            }
        }
    }
}

/// Exactly one JSON document, surrounded by nothing but whitespace.
pub fn is_json(value: &[u8]) -> bool {
    serde_json::from_slice::<IgnoredAny>(value).is_ok()
}

/// `prefix*` as a Redis MATCH pattern, with the glob characters in the
/// prefix escaped so it matches literally.
pub fn match_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('*');
    p
}

/// `used_memory` and `maxmemory` from an `INFO memory` reply.
pub fn parse_info_memory(info: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        info.lines().find_map(|l| {
            let (k, v) = l.trim().split_once(':')?;
            (k == name).then(|| v.trim().parse().ok()).flatten()
        })
    };
    (field("used_memory"), field("maxmemory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_must_be_one_complete_document() {
        for ok in [
            &b"{}"[..],
            b" [1,2] ",
            b"\"s\"",
            b"null",
            b"{\"a\":{\"b\":[1]}}\n",
        ] {
            assert!(is_json(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [&b""[..], b"{", b"{\"a\":1", b"{} {}", b"not json", b"\xff"] {
            assert!(!is_json(bad), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(Validate::Json.check(b"{"), Some("invalid JSON"));
        assert_eq!(
            Validate::Json.check_reader(&b"{\"a\":1}"[..]).unwrap(),
            None
        );
        assert_eq!(
            Validate::Json.check_reader(&b"[1,"[..]).unwrap(),
            Some("invalid JSON")
        );
        assert_eq!(
            Validate::Json.check_reader(&b"{} x"[..]).unwrap(),
            Some("invalid JSON")
        );
    }

    #[test]
    fn the_prefix_matches_literally() {
        assert_eq!(match_pattern("app:"), "app:*");
        assert_eq!(match_pattern("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:*");
    }

    #[test]
    fn info_memory_fields_are_read() {
        let info = "# Memory\r\nused_memory:1048576\r\nused_memory_human:1.00M\r\nmaxmemory:0\r\nmaxmemory_human:0B\r\n";
        assert_eq!(parse_info_memory(info), (Some(1_048_576), Some(0)));
        assert_eq!(parse_info_memory("# Memory\r\n"), (None, None));
    }
}
