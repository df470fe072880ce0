//! Limits on what a plugin may return. The guest's memory cap already
//! bounds how much can cross the boundary; these keep results small enough
//! to store, log and show, and reject the rest with a clear error.

use super::bindings::v0_1::types;

pub const MAX_FINDINGS: usize = 1000;
/// Summaries, messages, steps, descriptions.
pub const MAX_TEXT: usize = 4096;
/// Codes, names, metric names, label keys and values.
pub const MAX_NAME: usize = 256;
/// Metrics or labels per finding.
pub const MAX_ENTRIES: usize = 64;
pub const MAX_STEPS: usize = 1000;

fn text(what: &str, s: &str, max: usize) -> Result<(), String> {
    if s.len() > max {
        return Err(format!("{what} is {} bytes (max {max})", s.len()));
    }
    Ok(())
}

pub(crate) fn findings(findings: &[types::Finding]) -> Result<(), String> {
    if findings.len() > MAX_FINDINGS {
        return Err(format!("{} findings (max {MAX_FINDINGS})", findings.len()));
    }
    for (i, f) in findings.iter().enumerate() {
        let at = |field: &str| format!("finding {i}: {field}");
        text(&at("code"), &f.code, MAX_NAME)?;
        if f.code.is_empty() {
            return Err(at("code is empty"));
        }
        text(&at("summary"), &f.summary, MAX_TEXT)?;
        if f.metrics.len() > MAX_ENTRIES || f.labels.len() > MAX_ENTRIES {
            return Err(at(&format!("more than {MAX_ENTRIES} metrics or labels")));
        }
        for (k, _) in &f.metrics {
            text(&at("metric name"), k, MAX_NAME)?;
        }
        for (k, v) in &f.labels {
            text(&at("label key"), k, MAX_NAME)?;
            text(&at("label value"), v, MAX_NAME)?;
        }
    }
    Ok(())
}

pub(crate) fn outcome(o: &types::Outcome) -> Result<(), String> {
    if o.steps.len() > MAX_STEPS {
        return Err(format!("{} steps (max {MAX_STEPS})", o.steps.len()));
    }
    for s in &o.steps {
        text("a step", s, MAX_TEXT)?;
    }
    text("message", &o.message, MAX_TEXT)
}

pub(crate) fn manifest(m: &types::Manifest) -> Result<(), String> {
    text("name", &m.name, MAX_NAME)?;
    if m.name.is_empty() {
        return Err("name is empty".into());
    }
    text("version", &m.version, MAX_NAME)?;
    text("description", &m.description, MAX_TEXT)?;
    if m.roles.len() > 2 {
        return Err(format!(
            "{} roles (a plugin has at most two)",
            m.roles.len()
        ));
    }
    for r in &m.roles {
        let n = &r.needs;
        let count = n.dirs.len() + n.addresses.len() + n.connections.len() + n.commands.len();
        if count > MAX_ENTRIES {
            return Err(format!("{count} declared needs (max {MAX_ENTRIES})"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(summary: String) -> types::Finding {
        types::Finding {
            check: String::new(),
            code: "x.y".into(),
            status: types::Status::Ok,
            summary,
            metrics: vec![],
            labels: vec![],
        }
    }

    #[test]
    fn rejects_oversized_results() {
        assert!(findings(&[finding("fine".into())]).is_ok());
        assert!(findings(&[finding("x".repeat(MAX_TEXT + 1))]).is_err());
        let many: Vec<_> = (0..=MAX_FINDINGS).map(|_| finding(String::new())).collect();
        assert!(findings(&many).unwrap_err().contains("findings"));
        let mut empty_code = finding(String::new());
        empty_code.code.clear();
        assert!(findings(&[empty_code]).is_err());
    }
}
