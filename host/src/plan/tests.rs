//! Plan compilation of what needs no plugin: named connections and
//! commands, grants, and mend's own directories. Plugins are covered by
//! `tests/plan.rs` with real components.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::runtime::RuntimeConfig;

fn runtime() -> &'static Runtime {
    static RT: std::sync::OnceLock<Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| Runtime::new(RuntimeConfig::default()).unwrap())
}

/// Compiles `text` against an empty plugins directory; the errors that are
/// not about missing plugins.
async fn problems(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    let file = dir.path().join("mend.toml");
    let text = format!(
        "[engine]\nplugins_dir = \"plugins\"\nstate_dir = \"state\"\n{}",
        text.replace("{dir}", &dir.path().display().to_string())
    );
    let config = config::parse(&text, &file, |k| (k == "TOKEN").then(|| "s3cret".into()))
        .unwrap_or_else(|e| panic!("{e}"));
    let plugins = load_plugins(&config, runtime()).await;
    match Plan::compile(config, plugins, runtime()).await {
        Ok(_) => Vec::new(),
        Err(p) => p
            .errors
            .iter()
            .map(|e| e.to_string())
            .filter(|e| !e.contains("no plugin named"))
            .collect(),
    }
}

#[tokio::test]
async fn grants_are_resolved() {
    let e = problems(
        "[[check]]\nname = \"a\"\nplugin = \"p\"\ngrants = { dirs = [{ host = \"/definitely/not/here\", guest = \"/d\" }] }\n",
    )
    .await;
    assert!(
        e[0].contains("check[0].grants: directory grant `/definitely/not/here`"),
        "{e:?}"
    );
}

#[tokio::test]
async fn connections_and_commands_are_defined_once_and_granted_by_name() {
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
    assert_eq!(problems(text).await, Vec::<String>::new());
    let c = config::parse(text, Path::new("/tmp/mend.toml"), |_| Some("x".into())).unwrap();
    assert_eq!(c.connections.len(), 2);
    assert_eq!(c.commands["restart"].timeout.0, Duration::from_secs(60));
    assert!(c.commands["restart"].cwd.is_some());
}

#[tokio::test]
async fn undefined_names_and_bad_definitions_are_all_reported() {
    let all = problems(
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
    )
    .await
    .join("\n");
    assert!(all.contains("connections.appdb"), "{all}");
    assert!(all.contains("commands.empty"), "{all}");
    assert!(all.contains("check[0].grants"), "{all}");
    assert!(all.contains("command `missing` is not defined"), "{all}");
}

#[tokio::test]
async fn no_grant_reaches_mends_own_directories() {
    let all = problems(
        r#"
[[check]]
name = "a"
plugin = "p"
grants = { dirs = [{ host = "{dir}", guest = "/all", mode = "rw" }] }

[[check]]
name = "b"
plugin = "p"
grants = { dirs = [{ host = "{dir}/plugins", guest = "/p" }] }
"#,
    )
    .await;
    let text = all.join("\n");
    assert!(text.contains("check[0].grants.dirs[0]"), "{text}");
    assert!(text.contains("mend's own plugins directory"), "{text}");
    assert!(text.contains("state directory"), "{text}");
    assert!(text.contains("check[1].grants.dirs[0]"), "{text}");
    assert_eq!(all.len(), 2, "one error per grant: {text}");
    assert!(text.contains("mend.toml:8:"), "positions are given: {text}");
}

#[tokio::test]
async fn a_missing_plugins_directory_is_an_error_at_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mend.toml");
    let config = config::parse(
        "[engine]\nplugins_dir = \"nowhere\"\nstate_dir = \"state\"\n",
        &file,
        |_| None,
    )
    .unwrap();
    let plugins = load_plugins(&config, runtime()).await;
    let p = Plan::compile(config, plugins, runtime())
        .await
        .err()
        .unwrap();
    assert_eq!(p.errors.len(), 1, "{p}");
    let e = p.errors[0].to_string();
    assert!(e.contains(":2:15: engine.plugins_dir:"), "{e}");
    assert!(e.contains("cannot read the plugins directory"), "{e}");
}
