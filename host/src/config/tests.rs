use std::path::Path;

use super::*;

fn parse_str(text: &str) -> Result<Config, ConfigErrors> {
    parse(text, Path::new("mend.toml"), |k| {
        (k == "TOKEN").then(|| "s3cret".to_string())
    })
}

fn errors(text: &str) -> Vec<String> {
    parse_str(text)
        .unwrap_err()
        .0
        .iter()
        .map(|e| e.to_string())
        .collect()
}

const GOOD: &str = r#"
[engine]
interval = "15s"

[[check]]
name = "poller-data"
plugin = "stale-file"
config = { path = "/data/status.json", max_age = "10m", token = "${TOKEN}" }

[[check]]
name = "web"
plugin = "http-probe"
interval = "5s"
depends_on = ["poller-data"]

[[policy]]
name = "restart-poller"
check = "poller-data"
codes = ["file.*"]
trigger = { n = 2, of = 3 }
cooldown = "5m"

[[policy.step]]
action = "service-restart"
settle = "20s"

[[policy.step]]
name = "restart-harder"
action = "service-restart"
"#;

#[test]
fn a_good_config_parses_with_defaults() {
    let c = parse_str(GOOD).unwrap();
    assert_eq!(c.checks.len(), 2);
    assert_eq!(c.checks[0].interval(&c.engine), Duration::from_secs(15));
    assert_eq!(c.checks[1].interval(&c.engine), Duration::from_secs(5));
    assert_eq!(c.checks[0].jitter(&c.engine), Duration::from_millis(1500));
    assert_eq!(
        c.checks[0].config["token"].as_str(),
        Some("s3cret"),
        "${{VAR}} expands"
    );
    let p = &c.policies[0];
    assert_eq!(p.trigger.trigger().unwrap(), Trigger::NOfM { n: 2, m: 3 });
    assert_eq!(p.statuses(), vec![Status::Fail]);
    assert_eq!(p.steps[0].name(), "service-restart");
    assert_eq!(p.steps[1].name(), "restart-harder");
    assert_eq!(p.steps[0].settle.0, Duration::from_secs(20));
    assert_eq!(p.max_attempts, 5);
    assert!(!c.engine.dry_run);
}

#[test]
fn unknown_keys_name_the_line_column_and_key() {
    let e = errors(
        "[engine]\ninterval = \"1s\"\n\n[[check]]\nname = \"a\"\nplugin = \"p\"\nintervall = \"5s\"\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("mend.toml:7:1: check[0].intervall: unknown field `intervall`"),
        "{e:?}"
    );
    assert!(e[0].ends_with("did you mean `interval`?"), "{e:?}");
}

#[test]
fn schema_errors_in_different_tables_are_reported_together() {
    let e = errors(
        r#"
[engine]
intervl = "1s"

[[check]]
name = "a"
plugin = "p"
failure_threshold = "three"

[[check]]
name = "b"
plugin = "p"

[[policy]]
name = "x"
check = "a"
cooldwn = "1m"

[[policy.step]]
action = "fix"

[conections.db]
kind = "postgres"
"#,
    );
    let all = e.join("\n");
    assert!(
        all.contains("mend.toml:3:1: engine.intervl: unknown field `intervl`"),
        "{all}"
    );
    assert!(all.contains("did you mean `interval`?"), "{all}");
    assert!(
        all.contains("check[0].failure_threshold: invalid type"),
        "{all}"
    );
    assert!(all.contains("policy[0].cooldwn: unknown field"), "{all}");
    assert!(all.contains("did you mean `cooldown`?"), "{all}");
    assert!(all.contains("unknown table `conections`"), "{all}");
    assert!(all.contains("did you mean `connections`?"), "{all}");
    assert_eq!(e.len(), 4, "{all}");
}

#[test]
fn a_table_that_does_not_parse_is_not_reported_again_by_what_refers_to_it() {
    let e = errors(
        "[[check]]\nname = \"a\"\nplugin = \"p\"\nbogus = 1\n\n[[check]]\nname = \"b\"\nplugin = \"p\"\ndepends_on = [\"a\"]\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].contains("check[0].bogus"), "{e:?}");
}

#[test]
fn environment_values_are_typed_and_may_have_defaults() {
    let c = parse(
        "# ${UNSET} in a comment is left alone\n[engine]\nmax_concurrent = ${MEND_CONCURRENCY:-3}\ndry_run = ${DRY:-false}\n[[check]]\nname = \"a\"\nplugin = \"p\"\nlabels = { team = ${TEAM} }\n",
        Path::new("mend.toml"),
        |k| (k == "TEAM").then(|| "storage ops".to_string()),
    )
    .unwrap();
    assert_eq!(c.engine.max_concurrent, 3);
    assert!(!c.engine.dry_run);
    assert_eq!(c.checks[0].labels["team"], "storage ops");
    // A value that does not fit the key is an error at the key.
    let e = errors("[engine]\nmax_concurrent = ${TOKEN}\n");
    assert!(
        e[0].starts_with("mend.toml:2:18: engine.max_concurrent"),
        "{e:?}"
    );
}

#[test]
fn bad_values_name_the_key() {
    let e = errors("[[check]]\nname = \"a\"\nplugin = \"p\"\ninterval = \"5 parsecs\"\n");
    assert!(
        e[0].starts_with("mend.toml:4:12: check[0].interval: invalid duration"),
        "{e:?}"
    );
    let e = errors("[engine]\nmax_concurrent = \"many\"\n");
    assert!(
        e[0].starts_with("mend.toml:2:18: engine.max_concurrent: invalid type"),
        "{e:?}"
    );
}

#[test]
fn syntax_errors_have_a_position() {
    let e = errors("[engine]\ninterval = \n");
    assert!(e[0].starts_with("mend.toml:2:"), "{e:?}");
}

#[test]
fn missing_environment_variables_are_errors() {
    let e = errors("[[check]]\nname = \"a\"\nplugin = \"p\"\nconfig = { pw = \"${NOPE}\" }\n");
    assert_eq!(
        e,
        vec![
            "mend.toml:4:18: check[0].pw: environment variable `NOPE` is not set (give a default with `${NOPE:-value}`)"
        ]
    );
}

#[test]
fn every_semantic_problem_is_reported_at_once() {
    let text = r#"
[[check]]
name = "a"
plugin = "p"
depends_on = ["b", "ghost"]

[[check]]
name = "b"
plugin = "p"
depends_on = ["a"]

[[check]]
name = "b"
plugin = "p"

[[policy]]
name = "x"
check = "nope"
trigger = { consecutive = 2, n = 1 }
backoff = { base = "1m", max = "1s" }
"#;
    let e = errors(text);
    let all = e.join("\n");
    assert!(
        all.contains("mend.toml:13:8: check[2].name: check `b` is defined twice"),
        "{all}"
    );
    assert!(
        all.contains("check[0].depends_on[1]: unknown check `ghost`"),
        "{all}"
    );
    assert!(
        all.contains("dependency cycle: a → b → a") || all.contains("dependency cycle: b → a → b"),
        "{all}"
    );
    assert!(
        all.contains("mend.toml:18:9: policy[0].check: unknown check `nope`"),
        "{all}"
    );
    assert!(all.contains("policy[0].trigger: write either"), "{all}");
    assert!(
        all.contains("policy[0].step: a policy needs at least one"),
        "{all}"
    );
    assert!(all.contains("policy[0].backoff"), "{all}");
    assert!(e.len() >= 7, "{all}");
}

#[test]
fn an_unknown_connection_kind_names_the_key() {
    let errs = errors("[connections.m]\nkind = \"mysql\"\nurl = \"x\"\n");
    let all = errors_text(&errs);
    assert!(all.contains("connections"), "{all}");
    assert!(all.contains("mysql"), "{all}");
}

fn errors_text(errs: &[String]) -> String {
    errs.join("\n")
}

#[test]
fn escalation_routes_are_keyed_by_severity() {
    let c = parse_str(&format!(
        "{GOOD}\n[escalate.critical]\nname = \"page\"\naction = \"webhook-notify\"\n"
    ))
    .unwrap();
    assert_eq!(c.escalate[&Severity::Critical].name(), "page");
    let e = errors(&format!(
        "{GOOD}\n[escalate.critcal]\naction = \"webhook-notify\"\n"
    ));
    assert!(
        e.iter()
            .any(|m| m.contains("escalate.critcal") && m.contains("did you mean `critical`")),
        "{e:?}"
    );
}

#[test]
fn an_anomaly_trigger_parses_with_defaults_and_matches_any_status() {
    let c = parse_str(&format!(
        "{GOOD}\n[[policy]]\nname = \"slow-web\"\ncheck = \"web\"\ntrigger = {{ anomaly = {{ metric = \"latency_ms\", season = \"1d\" }} }}\n[[policy.step]]\naction = \"service-restart\"\n"
    ))
    .unwrap();
    let p = c.policies.iter().find(|p| p.name() == "slow-web").unwrap();
    assert_eq!(p.trigger.trigger().unwrap(), Trigger::Consecutive(3));
    assert_eq!(p.statuses(), vec![Status::Ok, Status::Warn, Status::Fail]);
    let a = p.trigger.anomaly.as_ref().unwrap();
    let rule = a.rule(Duration::from_secs(5));
    assert_eq!(rule.metric, "latency_ms");
    assert_eq!(rule.sigma, 4.0);
    assert_eq!(rule.min_history, Duration::from_secs(3600));
    assert_eq!(rule.min_samples, 30);
    assert_eq!(rule.season.unwrap().buckets, 24);
    assert!(a.problems(Duration::from_secs(5)).is_empty());
}

#[test]
fn a_bad_anomaly_trigger_names_each_key_at_its_place() {
    let e = errors(&format!(
        "{GOOD}\n[[policy]]\nname = \"slow-web\"\ncheck = \"web\"\ntrigger = {{ anomaly = {{ metric = \"\", sigma = -1, min_samples = 0, half_life = \"0s\", season = \"1h\", buckets = 7200 }} }}\n[[policy.step]]\naction = \"service-restart\"\n"
    ));
    let all = e.join("\n");
    for msg in [
        "trigger.anomaly.metric: is empty",
        "trigger.anomaly.sigma: -1 is not in (0, 100]",
        "trigger.anomaly.min_samples: must be at least 1",
        "trigger.anomaly.half_life: must be more than 0s",
        "trigger.anomaly.season: 1h in 7200 buckets is less than the check's interval (5s) per bucket",
    ] {
        assert!(all.contains(msg), "{msg}: {all}");
    }
    // Each at the line of the policy's trigger.
    let line = GOOD.lines().count() + 5;
    assert!(all.contains(&format!("mend.toml:{line}:")), "{all}");
    let e = errors(&format!(
        "{GOOD}\n[[policy]]\nname = \"slow-web\"\ncheck = \"web\"\ntrigger = {{ anomaly = {{ metric = \"x\", direction = \"sideways\" }} }}\n[[policy.step]]\naction = \"service-restart\"\n"
    ));
    assert!(e.join("\n").contains("sideways"), "{e:?}");
}

#[test]
fn a_plugin_gets_its_own_limits_between_the_engine_and_a_check() {
    let c = parse_str(
        r#"
[engine]
limits = { fuel = 500, deadline = "2s" }

[plugins.py-check]
limits = { memory = "32MiB", fuel = 3000 }

[[check]]
name = "python"
plugin = "py-check"

[[check]]
name = "python-fast"
plugin = "py-check"
limits = { deadline = "1s" }

[[check]]
name = "rust"
plugin = "stale-file"
"#,
    )
    .unwrap();
    let at = |i: usize| {
        c.checks[i]
            .limits
            .over(c.plugin_limits(c.checks[i].plugin.get_ref()))
    };
    let py = at(0);
    assert_eq!(
        (py.memory, py.fuel, py.deadline),
        (32 << 20, 3000, Duration::from_secs(2))
    );
    assert_eq!(at(1).deadline, Duration::from_secs(1));
    assert_eq!(at(1).memory, 32 << 20);
    let rust = at(2);
    assert_eq!((rust.memory, rust.fuel), (64 << 20, 500));
    assert!(c.plugins["py-check"].sha256.is_none());
}

#[test]
fn bad_plugin_limits_name_the_key_and_position() {
    let errs = errors(
        r#"
[plugins.py-check]
limits = { memory = "2GiB", fuel = 0 }

[plugins.other]
limits = { memroy = "1MiB" }
"#,
    );
    let all = errors_text(&errs);
    assert!(
        all.contains("mend.toml:3:") && all.contains("plugins.py-check.limits.memory"),
        "{all}"
    );
    assert!(
        all.contains("plugins.py-check.limits.fuel: must be more than 0"),
        "{all}"
    );
    assert!(
        all.contains("mend.toml:6:") && all.contains("memroy"),
        "{all}"
    );
}

/// Found by the `config` fuzz target: TOML reports a key nested past its
/// limit (80 parts) without a span; every error still says where.
#[test]
fn syntax_errors_without_a_place_from_toml_get_one() {
    let deep_key = format!("[engine]\nok = 1\n{} = 1\n", vec!["a"; 100].join("."));
    let deep_table = format!(
        "[[check]]\nname = \"x\"\n\n[{}]\n",
        vec!["t"; 100].join(".")
    );
    let deep_array = format!("[engine]\nx = {}{}\n", "[".repeat(200), "]".repeat(200));
    let deep_inline = format!(
        "[engine]\nx = {}{}\n",
        "{ a = ".repeat(200),
        "}".repeat(200)
    );
    for (text, line) in [
        (deep_key, 3),
        (deep_table, 4),
        (deep_array, 2),
        (deep_inline, 2),
    ] {
        let parsed = parse_partial(&text, Path::new("mend.toml"), |_| None);
        assert!(!parsed.errors.is_empty(), "{text}");
        for e in &parsed.errors {
            assert_eq!(e.position.map(|p| p.0), Some(line), "{e} in {text}");
        }
    }
}
