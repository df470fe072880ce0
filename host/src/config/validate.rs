//! Everything about a config the file alone can tell: references resolve,
//! names are unique, no dependency cycles, durations and thresholds make
//! sense. All problems are reported, not just the first. What needs the
//! system (directories, addresses, connections, plugins) is `crate::plan`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::error::Reporter;
use super::suggest::hint;
use super::{CheckConfig, Config, LimitsConfig, StepConfig, Unparsed};
use crate::policy::root_cause::find_cycle;

pub(super) fn validate(c: &Config, unparsed: &Unparsed, r: &mut Reporter<'_>) {
    for (table, names) in [
        ("connections", c.connections.keys().collect::<Vec<_>>()),
        ("commands", c.commands.keys().collect()),
        ("plugins", c.plugins.keys().collect()),
    ] {
        for name in names {
            if !valid_name(name) {
                r.at(
                    None,
                    format!("{table}.{name}"),
                    "use letters, digits, `-`, `_` and `.` in names",
                );
            }
        }
    }
    if c.engine.interval.0.is_zero() {
        r.at(None, "engine.interval", "must be more than 0s");
    }
    if c.engine.max_concurrent == 0 {
        r.at(None, "engine.max_concurrent", "must be at least 1");
    }
    limits(r, None, "engine.limits", &c.engine.limits);
    for (name, p) in &c.plugins {
        limits(r, None, &format!("plugins.{name}.limits"), &p.limits);
    }

    let mut names = BTreeSet::new();
    for (i, check) in c.checks.iter().enumerate() {
        let key = |f: &str| format!("check[{i}].{f}");
        let span = Some(check.name.span());
        let name = check.name();
        if !valid_name(name) {
            r.at(
                span.clone(),
                key("name"),
                format!("`{name}`: use letters, digits, `-`, `_` and `.`"),
            );
        }
        if !names.insert(name) {
            r.at(
                span.clone(),
                key("name"),
                format!("check `{name}` is defined twice"),
            );
        }
        if check.plugin.get_ref().is_empty() {
            r.at(Some(check.plugin.span()), key("plugin"), "is empty");
        }
        let interval = check.interval(&c.engine);
        if interval.is_zero() {
            r.at(None, key("interval"), "must be more than 0s");
        }
        if check.jitter(&c.engine) >= interval && !interval.is_zero() {
            r.at(None, key("jitter"), "must be less than the interval");
        }
        if check.failure_threshold == 0 {
            r.at(None, key("failure_threshold"), "must be at least 1");
        }
        if check.success_threshold == 0 {
            r.at(None, key("success_threshold"), "must be at least 1");
        }
        if let Err(e) = check.flap.validate() {
            r.at(None, key("flap"), e);
        }
        // A deadline set here or for the plugin must fit the commands.
        let plugin_deadline = c
            .plugins
            .get(check.plugin.get_ref())
            .and_then(|p| p.limits.deadline);
        if let Some(deadline) = check.limits.deadline.or(plugin_deadline) {
            commands_fit(
                c,
                r,
                None,
                &key("grants"),
                &check.grants.commands,
                deadline.0,
            );
        }
        limits(r, None, &key("limits"), &check.limits);
    }

    for (i, check) in c.checks.iter().enumerate() {
        for (j, dep) in check.depends_on.iter().enumerate() {
            let key = format!("check[{i}].depends_on[{j}]");
            if dep.get_ref() == check.name() {
                r.at(Some(dep.span()), key, "a check cannot depend on itself");
            } else if !names.contains(dep.get_ref().as_str())
                && !unparsed.checks.contains(dep.get_ref())
            {
                r.at(
                    Some(dep.span()),
                    key,
                    format!(
                        "unknown check `{}`{}",
                        dep.get_ref(),
                        hint(dep.get_ref(), names.iter().copied())
                    ),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(&dependency_graph(&c.checks)) {
        r.at(
            None,
            "check.depends_on",
            format!("dependency cycle: {}", cycle.join(" → ")),
        );
    }

    let mut policy_names = BTreeSet::new();
    for (i, p) in c.policies.iter().enumerate() {
        let key = |f: &str| format!("policy[{i}].{f}");
        let span = Some(p.name.span());
        if !valid_name(p.name()) {
            r.at(
                span.clone(),
                key("name"),
                format!("`{}`: use letters, digits, `-`, `_` and `.`", p.name()),
            );
        }
        if !policy_names.insert(p.name()) {
            r.at(
                span.clone(),
                key("name"),
                format!("policy `{}` is defined twice", p.name()),
            );
        }
        if !names.contains(p.check.get_ref().as_str())
            && !unparsed.checks.contains(p.check.get_ref())
        {
            r.at(
                Some(p.check.span()),
                key("check"),
                format!(
                    "unknown check `{}`{}",
                    p.check.get_ref(),
                    hint(p.check.get_ref(), names.iter().copied())
                ),
            );
        }
        for code in &p.codes {
            if let Err(e) = globset::Glob::new(code) {
                r.at(None, key("codes"), format!("`{code}`: {e}"));
            }
        }
        if p.statuses().is_empty() {
            r.at(None, key("status"), "matches no status");
        }
        if let Err(e) = p.trigger.trigger() {
            r.at(None, key("trigger"), e);
        }
        if let Some(a) = &p.trigger.anomaly {
            let interval = c
                .checks
                .iter()
                .find(|x| x.name() == p.check.get_ref())
                .map_or(c.engine.interval.0, |x| x.interval(&c.engine));
            for (field, e) in a.problems(interval) {
                r.at(None, key(&format!("trigger.anomaly.{field}")), e);
            }
        }
        if p.steps.is_empty() {
            r.at(
                None,
                key("step"),
                "a policy needs at least one [[policy.step]]",
            );
        }
        if p.verify.probes == Some(0) {
            r.at(None, key("verify.probes"), "must be at least 1");
        }
        if p.max_attempts == 0 {
            r.at(None, key("max_attempts"), "must be at least 1");
        }
        if p.window.0.is_zero() {
            r.at(None, key("window"), "must be more than 0s");
        }
        if let Err(e) = p.backoff.backoff().validate() {
            r.at(None, key("backoff"), e);
        }
        let b = p.breaker.breaker();
        if b.failure_threshold == 0 {
            r.at(None, key("breaker.failures"), "must be at least 1");
        }
        if b.max_open_for < b.open_for {
            r.at(
                None,
                key("breaker.max_open_for"),
                "must be at least open_for",
            );
        }
        for (j, m) in p.maintenance.iter().enumerate() {
            if let Err(e) = m.validate() {
                r.at(None, key(&format!("maintenance[{j}]")), e);
            }
        }
        let mut step_names = BTreeSet::new();
        for (j, s) in p.steps.iter().enumerate() {
            step(c, r, s, &key(&format!("step[{j}]")));
            if !step_names.insert(s.name()) {
                r.at(
                    Some(s.action.span()),
                    key(&format!("step[{j}].name")),
                    format!(
                        "two steps are named `{}`: give them distinct `name`s",
                        s.name()
                    ),
                );
            }
        }
        if let Some(s) = &p.escalate {
            step(c, r, s, &key("escalate"));
        }
        if p.escalate_after.is_some_and(|d| d.0.is_zero()) {
            r.at(None, key("escalate_after"), "must be more than 0s");
        }
    }
    for (severity, s) in &c.escalate {
        step(c, r, s, &format!("escalate.{}", severity.as_str()));
    }
}

fn step(c: &Config, r: &mut Reporter<'_>, s: &StepConfig, key: &str) {
    if s.action.get_ref().is_empty() {
        r.at(Some(s.action.span()), format!("{key}.action"), "is empty");
    }
    let plugin_deadline = c
        .plugins
        .get(s.action.get_ref())
        .and_then(|p| p.limits.deadline);
    if let Some(deadline) = s.limits.deadline.or(plugin_deadline) {
        commands_fit(
            c,
            r,
            None,
            &format!("{key}.grants"),
            &s.grants.commands,
            deadline.0,
        );
    }
    limits(r, None, &format!("{key}.limits"), &s.limits);
}

/// The largest `memory` a call may be given: the engine's largest linear
/// memory (`runtime::EngineSettings::max_memory_size`).
const MAX_MEMORY: u64 = 1 << 30;

fn limits(r: &mut Reporter<'_>, span: Option<std::ops::Range<usize>>, key: &str, l: &LimitsConfig) {
    if l.deadline.is_some_and(|d| d.0.is_zero()) {
        r.at(
            span.clone(),
            format!("{key}.deadline"),
            "must be more than 0s",
        );
    }
    if l.fuel == Some(0) {
        r.at(span.clone(), format!("{key}.fuel"), "must be more than 0");
    }
    if let Some(m) = l.memory {
        if m.0 > MAX_MEMORY {
            r.at(
                span,
                format!("{key}.memory"),
                format!(
                    "{} bytes is more than mend allows a plugin call (1GiB)",
                    m.0
                ),
            );
        } else if m.0 < 1 << 20 {
            r.at(
                span,
                format!("{key}.memory"),
                format!("{} bytes is too little for any plugin: at least 1MiB", m.0),
            );
        }
    }
}

/// A granted command must be able to finish within a deadline set for the
/// call, or the deadline kills it mid-way. (An unset deadline is extended
/// to fit: `LimitsConfig::over_for`.)
fn commands_fit(
    c: &Config,
    r: &mut Reporter<'_>,
    span: Option<std::ops::Range<usize>>,
    key: &str,
    granted: &[String],
    deadline: Duration,
) {
    for name in granted {
        if let Some(def) = c.commands.get(name)
            && def.timeout.0 > deadline
        {
            r.at(
                span.clone(),
                key.to_string(),
                format!(
                    "command `{name}` may run for {} but `limits.deadline` here is {}: raise it, leave it unset, or lower the command's `timeout`",
                    humantime::format_duration(def.timeout.0),
                    humantime::format_duration(deadline)
                ),
            );
        }
    }
}

pub(crate) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Check name → the checks it depends on.
pub(crate) fn dependency_graph(checks: &[CheckConfig]) -> BTreeMap<String, Vec<String>> {
    let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in checks {
        graph
            .entry(c.name().to_string())
            .or_default()
            .extend(c.depends_on.iter().map(|d| d.get_ref().clone()));
    }
    graph
}
