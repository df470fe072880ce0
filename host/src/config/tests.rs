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
    assert_eq!(p.status, vec![Status::Fail]);
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
        vec!["mend.toml:4:18: environment variable `NOPE` is not set"]
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
fn grants_are_checked() {
    let e = errors(
        "[[check]]\nname = \"a\"\nplugin = \"p\"\ngrants = { dirs = [{ host = \"/definitely/not/here\", guest = \"/d\" }] }\n",
    );
    assert!(
        e[0].contains("check[0].grants: directory grant `/definitely/not/here`"),
        "{e:?}"
    );
}

#[test]
fn connections_and_commands_are_defined_once_and_granted_by_name() {
    let text = r#"
[connections.appdb]
kind = "postgres"
url = "host=127.0.0.1 user=app password=${TOKEN}"
timeout = "3s"

[connections.cache]
kind = "redis"
url = "redis://127.0.0.1:6379/"

[commands.restart]
argv = ["/bin/true"]
cwd = "."
timeout = "1m"

[[check]]
name = "db"
plugin = "pg-reconnect"
grants = { connections = ["appdb"], urls = ["http://127.0.0.1:8080/pool"] }

[[policy]]
name = "fix-db"
check = "db"

[[policy.step]]
action = "service-restart"
grants = { commands = ["restart"] }
"#;
    let c = parse_str(text).unwrap();
    assert_eq!(c.connections.len(), 2);
    assert_eq!(c.commands["restart"].timeout.0, Duration::from_secs(60));
    assert!(c.commands["restart"].cwd.is_some());
    assert!(c.backends().is_ok());
}

#[test]
fn undefined_names_and_bad_definitions_are_all_reported() {
    let errs = errors(
        r#"
[connections.appdb]
kind = "postgres"
url = "host=x port=notaport"

[commands.empty]
argv = []

[[check]]
name = "db"
plugin = "pg-reconnect"
grants = { connections = ["nope"], urls = ["ftp://x/"] }

[[policy]]
name = "p"
check = "db"

[[policy.step]]
action = "service-restart"
grants = { commands = ["missing"] }
"#,
    );
    let all = errors_text(&errs);
    assert!(all.contains("connections.appdb"), "{all}");
    assert!(all.contains("commands.empty"), "{all}");
    assert!(all.contains("check[0].grants"), "{all}");
    assert!(all.contains("command `missing` is not defined"), "{all}");
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
