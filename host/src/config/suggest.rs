//! "Did you mean": the closest known name to a misspelt one.

/// The candidate closest to `word`, if one is close enough to be a typo.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter(|c| *c != word)
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}

/// `; did you mean `x`?` or nothing.
pub fn hint<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    closest(word, candidates)
        .map(|c| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

/// serde's "unknown field `intervl`, expected one of `a`, `b`" (or
/// "expected `a` or `b`", or an unknown variant) with a suggestion added.
pub fn with_field_hint(message: &str) -> String {
    let start = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| i + p.len()));
    let Some(rest) = start.map(|i| &message[i..]) else {
        return message.to_string();
    };
    let Some((word, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    format!("{message}{}", hint(word, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(closest("intervl", ["interval", "plugin"]), Some("interval"));
        assert_eq!(
            closest("stale-fle", ["stale-file", "disk-cleanup"]),
            Some("stale-file")
        );
        assert_eq!(closest("xyz", ["interval", "plugin"]), None);
        assert_eq!(
            with_field_hint(
                "unknown field `intervall`, expected one of `name`, `interval`, `jitter`"
            ),
            "unknown field `intervall`, expected one of `name`, `interval`, `jitter`; did you mean `interval`?"
        );
        assert_eq!(
            with_field_hint("unknown variant `postgress`, expected `postgres` or `redis`"),
            "unknown variant `postgress`, expected `postgres` or `redis`; did you mean `postgres`?"
        );
        assert_eq!(with_field_hint("invalid type"), "invalid type");
        assert!(
            with_field_hint("`x`: unknown field `max_ag`, expected `path` or `max_age`")
                .ends_with("did you mean `max_age`?")
        );
    }
}
