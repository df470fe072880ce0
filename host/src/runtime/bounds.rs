//! What a plugin may hand back. The guest's memory cap already bounds how
//! much can cross the boundary; these keep results small enough to store,
//! log and show, reject the rest with a clear error, and make every string
//! a plugin wrote safe to print: names and codes must be plain, and control
//! characters in free text (newlines that would forge a log line, ANSI
//! escapes that would drive a terminal) are written out as `\n`, `\u{1b}`.

use crate::contract::{Finding, GuestError, Manifest, Outcome};
use crate::text::{escape, truncate};

pub const MAX_FINDINGS: usize = 1000;
/// Summaries, messages, steps, descriptions.
pub const MAX_TEXT: usize = 4096;
/// Codes, names, metric names, label keys and values.
pub const MAX_NAME: usize = 256;
/// Metrics or labels per finding.
pub const MAX_ENTRIES: usize = 64;
pub const MAX_STEPS: usize = 1000;

fn text(what: impl std::fmt::Display, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes (max {max})", s.len()));
    }
    Ok(())
}

fn plain(what: impl std::fmt::Display, s: &str) -> Result<(), String> {
    text(&what, s, MAX_NAME)?;
    if s.chars().any(char::is_control) {
        return Err(format!(
            "{what} {:?} contains control characters",
            escape(s)
        ));
    }
    Ok(())
}

fn clean(s: &mut String) {
    if let std::borrow::Cow::Owned(e) = escape(s) {
        *s = e;
    }
}

/// Which field of which finding, spelt out only for an error (every
/// call's findings are checked: no string is built when they pass).
struct At<'a>(usize, &'a str);

impl std::fmt::Display for At<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "finding {}: {}", self.0, self.1)
    }
}

/// Checks findings and makes their free text printable.
pub(crate) fn findings(findings: &mut [Finding]) -> Result<(), String> {
    if findings.len() > MAX_FINDINGS {
        return Err(format!("{} findings (max {MAX_FINDINGS})", findings.len()));
    }
    for (i, f) in findings.iter_mut().enumerate() {
        let at = |field: &str| format!("finding {i}: {field}");
        if f.code.is_empty() {
            return Err(at("code is empty"));
        }
        plain(At(i, "code"), &f.code)?;
        text(At(i, "summary"), &f.summary, MAX_TEXT)?;
        clean(&mut f.summary);
        if f.metrics.len() > MAX_ENTRIES || f.labels.len() > MAX_ENTRIES {
            return Err(at(&format!("more than {MAX_ENTRIES} metrics or labels")));
        }
        for (k, v) in &f.metrics {
            plain(At(i, "metric name"), k)?;
            // JSON (the store's evidence, the API) has no NaN or infinity.
            if !v.is_finite() {
                return Err(at(&format!(
                    "metric {:?} is {v}, not a finite number",
                    escape(k)
                )));
            }
        }
        for (k, v) in &f.labels {
            plain(At(i, "label key"), k)?;
            text(At(i, "label value"), v, MAX_NAME)?;
        }
        // In place: a value that needs no escaping is not copied.
        for v in f.labels.values_mut() {
            clean(v);
        }
    }
    Ok(())
}

/// Checks an outcome and makes its text printable.
pub(crate) fn outcome(o: &mut Outcome) -> Result<(), String> {
    if o.steps.len() > MAX_STEPS {
        return Err(format!("{} steps (max {MAX_STEPS})", o.steps.len()));
    }
    for s in &mut o.steps {
        text("a step", s, MAX_TEXT)?;
        clean(s);
    }
    text("message", &o.message, MAX_TEXT)?;
    clean(&mut o.message);
    Ok(())
}

/// Checks what `describe()` returned.
pub(crate) fn manifest(m: &mut Manifest) -> Result<(), String> {
    crate::runtime::plugin::valid_name(&m.name)?;
    plain("version", &m.version)?;
    text("description", &m.description, MAX_TEXT)?;
    clean(&mut m.description);
    if m.roles.len() > 2 {
        return Err(format!(
            "{} roles (a plugin has at most two)",
            m.roles.len()
        ));
    }
    for r in &m.roles {
        needs(&r.needs)?;
    }
    Ok(())
}

/// Checks declared needs (from `describe()` or `validate()`).
pub(crate) fn needs(n: &crate::contract::Needs) -> Result<(), String> {
    let count = n.dirs.len()
        + n.addresses.len()
        + n.urls.len()
        + n.connections.len()
        + n.commands.len()
        + n.processes.len();
    if count > MAX_ENTRIES {
        return Err(format!("{count} declared needs (max {MAX_ENTRIES})"));
    }
    for d in &n.dirs {
        plain("a directory need", &d.path)?;
    }
    for s in n
        .addresses
        .iter()
        .chain(&n.urls)
        .chain(&n.connections)
        .chain(&n.commands)
        .chain(&n.processes)
    {
        plain("a need", s)?;
    }
    Ok(())
}

/// A plugin's own error message, bounded and printable.
pub(crate) fn message(m: &str) -> String {
    escape(truncate(m, MAX_TEXT)).into_owned()
}

/// The guest's error with its message bounded and printable.
pub(crate) fn guest_error(e: GuestError) -> GuestError {
    match e {
        GuestError::BadConfig(m) => GuestError::BadConfig(message(&m)),
        GuestError::Denied(m) => GuestError::Denied(message(&m)),
        GuestError::Failed(m) => GuestError::Failed(message(&m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Status;

    fn finding(summary: String) -> Finding {
        Finding {
            check: String::new(),
            code: "x.y".into(),
            status: Status::Ok,
            summary,
            metrics: Default::default(),
            labels: Default::default(),
        }
    }

    #[test]
    fn rejects_oversized_results() {
        assert!(findings(&mut [finding("fine".into())]).is_ok());
        assert!(findings(&mut [finding("x".repeat(MAX_TEXT + 1))]).is_err());
        let mut many: Vec<_> = (0..=MAX_FINDINGS).map(|_| finding(String::new())).collect();
        assert!(findings(&mut many).unwrap_err().contains("findings"));
        let mut empty_code = finding(String::new());
        empty_code.code.clear();
        assert!(findings(&mut [empty_code]).is_err());
    }

    /// Found by the `wit_values` fuzz target: a NaN metric was taken, and
    /// the evidence it was stored in did not read back.
    #[test]
    fn metrics_must_be_finite() {
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut f = finding(String::new());
            f.metrics.insert("ratio".into(), v);
            let e = findings(&mut [f]).unwrap_err();
            assert!(
                e.contains("\"ratio\"") && e.contains("not a finite number"),
                "{e}"
            );
        }
        let mut f = finding(String::new());
        f.metrics.insert("ratio".into(), -0.5e300);
        assert!(findings(&mut [f]).is_ok());
    }

    /// Found by the `describe` fuzz target: process names were neither
    /// counted nor checked for control characters.
    #[test]
    fn process_needs_are_bounded_and_plain() {
        let many = crate::contract::Needs {
            processes: vec!["nginx".into(); MAX_ENTRIES + 1],
            ..Default::default()
        };
        assert!(needs(&many).unwrap_err().contains("declared needs"));
        let forged = crate::contract::Needs {
            processes: vec!["nginx\nERROR forged".into()],
            ..Default::default()
        };
        assert!(needs(&forged).unwrap_err().contains("control characters"));
        let fine = crate::contract::Needs {
            processes: vec!["postgres*".into()],
            ..Default::default()
        };
        assert!(needs(&fine).is_ok());
    }

    #[test]
    fn plugin_text_is_made_printable_and_names_plain() {
        let mut f = [finding("disk full\nERROR forged \u{1b}[2J".into())];
        findings(&mut f).unwrap();
        assert_eq!(f[0].summary, "disk full\\nERROR forged \\u{1b}[2J");
        let mut bad = finding(String::new());
        bad.code = "x\ny".into();
        assert!(findings(&mut [bad]).is_err());
    }
}
