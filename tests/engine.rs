//! The healing engine end to end, with real plugins in the sandbox, a real
//! SQLite store, and tokio's paused clock driving time-driven policy.
//!
//! `fixture-scripted` reports whatever its control file says; the
//! `fixture-fixer` action writes into that file (or is told not to heal,
//! or to fail) and logs every call, so tests can count attempts.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mend::engine::{Clock, Engine, shutdown};
use mend::policy::health::Health;
use mend::runtime::{Runtime, RuntimeConfig};
use mend::store::{AttemptOutcome, Incident, IncidentState, Store};
use mend_test_artifacts as artifacts;

/// 2026-11-22T00:00:00Z, a Sunday.
const START: u64 = 1_795_305_600_000;

struct World {
    ctl: tempfile::TempDir,
    _state: tempfile::TempDir,
    _plugins: tempfile::TempDir,
    engine: Arc<Engine>,
    trigger: Option<shutdown::Trigger>,
    task: Option<tokio::task::JoinHandle<()>>,
}

fn runtime() -> Arc<Runtime> {
    static RT: std::sync::OnceLock<Arc<Runtime>> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("mend-engine-test-")
            .tempdir()
            .unwrap()
            .keep();
        Arc::new(
            Runtime::new(RuntimeConfig {
                state_dir: Some(dir),
                // Under tokio's paused clock, a file operation on the
                // blocking pool would let virtual time jump to the call's
                // deadline; inline, time stands still while it runs.
                inline_file_io: true,
                ..RuntimeConfig::default()
            })
            .unwrap(),
        )
    })
    .clone()
}

impl World {
    /// Starts an engine on `toml`, where `{ctl}` is the control directory
    /// (holding `files`) and `{plugins}`/`{state}` are filled in.
    async fn start_with(toml: &str, files: &[(&str, &str)]) -> World {
        let w = Self::launch(toml, files).await;
        assert!(
            w.engine.plugin_errors().is_empty(),
            "{:?}",
            w.engine.plugin_errors()
        );
        w
    }

    /// Like `start_with`, but a config naming a missing plugin is fine.
    async fn launch(toml: &str, files: &[(&str, &str)]) -> World {
        let ctl = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let plugins = tempfile::tempdir().unwrap();
        for p in [artifacts::SCRIPTED, artifacts::FIXER] {
            let name = Path::new(p).file_name().unwrap();
            std::fs::copy(p, plugins.path().join(name)).unwrap();
        }
        for (f, content) in files {
            std::fs::write(ctl.path().join(f), content).unwrap();
        }
        let text = toml
            .replace("{ctl}", ctl.path().to_str().unwrap())
            .replace("{plugins}", plugins.path().to_str().unwrap())
            .replace("{state}", state.path().to_str().unwrap());
        let file = state.path().join("mend.toml");
        let config = mend::config::parse(&text, &file, |_| None).unwrap_or_else(|e| panic!("{e}"));
        let clock = Clock::starting_at(START);
        let (store, _) = Store::open(&state.path().join("mend.db"), clock.now()).unwrap();
        let engine = Engine::new(config, runtime(), Arc::new(store), clock)
            .await
            .unwrap();
        let (stop, shutdown) = shutdown::channel();
        let e = engine.clone();
        let task = tokio::spawn(async move { e.run(shutdown).await });
        World {
            ctl,
            _state: state,
            _plugins: plugins,
            engine,
            trigger: Some(stop),
            task: Some(task),
        }
    }

    fn set(&self, file: &str, content: &str) {
        std::fs::write(self.ctl.path().join(file), content).unwrap();
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.ctl.path().join(file)).unwrap_or_default()
    }

    /// Lines the fixer logged to `file`.
    fn calls(&self, file: &str) -> Vec<String> {
        self.read(file).lines().map(str::to_string).collect()
    }

    fn incidents(&self) -> Vec<Incident> {
        let mut v = self.engine.store().incidents(false, 100).unwrap();
        v.reverse();
        v
    }

    fn health(&self, check: &str) -> Health {
        self.engine
            .snapshot()
            .into_iter()
            .find(|c| c.name == check)
            .unwrap()
            .health
    }

    fn last_at(&self, check: &str) -> Option<u64> {
        self.engine
            .snapshot()
            .into_iter()
            .find(|c| c.name == check)
            .and_then(|c| c.last.map(|l| l.at))
    }

    /// Waits (in virtual time) for check `check` to finish its next run.
    async fn next_run(&self, check: &str) {
        let before = self.last_at(check);
        for _ in 0..100_000 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if self.last_at(check) != before {
                return;
            }
        }
        panic!("check {check} did not run");
    }

    async fn runs(&self, check: &str, n: usize) {
        for _ in 0..n {
            self.next_run(check).await;
        }
    }

    async fn stop(mut self) {
        self.trigger.take().unwrap().fire();
        self.task.take().unwrap().await.unwrap();
    }
}

async fn wait(d: Duration) {
    tokio::time::sleep(d).await;
}

fn header() -> &'static str {
    r#"
[engine]
plugins_dir = "{plugins}"
state_dir = "{state}"
interval = "10s"
max_concurrent = 4
"#
}

fn check(name: &str, extra: &str) -> String {
    format!(
        r#"
[[check]]
name = "{name}"
plugin = "fixture-scripted"
jitter = "0s"
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/{name}" }}
{extra}
"#
    )
}

fn policy(name: &str, check: &str, extra: &str) -> String {
    format!(
        r#"
[[policy]]
name = "{name}"
check = "{check}"
{extra}
"#
    )
}

/// A ladder step: the fixer writing `write` into the check's file.
fn step(check: &str, name: &str, write: &str, extra: &str) -> String {
    format!(
        r#"
[[policy.step]]
name = "{name}"
action = "fixture-fixer"
settle = "5s"
grants = {{ dirs = [{{ host = "{{ctl}}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/{check}", write = "{write}", log = "/ctl/actions.log" {extra} }}
"#
    )
}

fn escalate() -> &'static str {
    r#"
[policy.escalate]
action = "fixture-fixer"
grants = { dirs = [{ host = "{ctl}", guest = "/ctl", mode = "rw" }] }
config = { file = "/ctl/escalated", write = "yes", log = "/ctl/escalations.log" }
"#
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trigger_and_a_verified_heal_closes_the_incident() {
    let toml = [
        header(),
        &check("app", ""),
        &policy("fix-app", "app", "trigger = { consecutive = 3 }"),
        &step("app", "fix", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    w.runs("app", 2).await;
    assert!(
        w.calls("actions.log").is_empty(),
        "two failures do not trigger"
    );
    assert!(w.incidents().is_empty());
    w.next_run("app").await; // third failure: detect → diagnose → act
    wait(Duration::from_secs(8)).await; // settle, verify
    assert_eq!(
        w.calls("actions.log"),
        vec!["app dry_run=false codes=scripted.fail"]
    );
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    assert_eq!(inc.root_cause, "app");
    assert_eq!(inc.diagnosis["decision"], "remediate");
    assert_eq!(inc.diagnosis["evidence"][0]["code"], "scripted.fail");
    assert_eq!(inc.attempts.len(), 1);
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Healed);
    assert_eq!(
        inc.attempts[0].detail["verification"][0]["code"],
        "scripted.ok"
    );
    assert!(inc.attempts[0].fuel_used.unwrap() > 0);
    assert_eq!(w.read("app"), "ok");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn n_of_m_trigger_counts_failures_that_are_not_consecutive() {
    let toml = [
        header(),
        &check("app", ""),
        &policy("fix-app", "app", "trigger = { n = 2, of = 4 }"),
        &step("app", "fix", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    w.next_run("app").await;
    w.set("app", "ok");
    w.next_run("app").await;
    assert!(w.calls("actions.log").is_empty(), "1 of 2 is not enough");
    w.set("app", "fail");
    w.next_run("app").await; // fail, ok, fail: 2 of the last 4
    wait(Duration::from_secs(8)).await;
    assert_eq!(w.calls("actions.log").len(), 1);
    assert_eq!(w.incidents()[0].state, IncidentState::Healed);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn one_passing_probe_does_not_make_a_failing_check_healthy() {
    let toml = [
        header(),
        &check("app", "failure_threshold = 3\nsuccess_threshold = 3"),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "ok")]).await;
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Healthy);
    w.set("app", "fail");
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Degraded);
    w.runs("app", 2).await;
    assert_eq!(w.health("app"), Health::Unavailable);
    w.set("app", "ok");
    w.runs("app", 2).await;
    assert_eq!(
        w.health("app"),
        Health::Unavailable,
        "2 of 3 good results are not enough"
    );
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Healthy);
    let history = w.engine.store().history("app", 10).unwrap();
    let changes: Vec<(&str, &str)> = history
        .iter()
        .rev()
        .map(|r| (r.health.as_str(), r.status.as_str()))
        .collect();
    assert_eq!(
        changes,
        vec![
            ("healthy", "ok"),
            ("degraded", "fail"),
            ("unavailable", "fail"),
            ("unavailable", "ok"),
            ("healthy", "ok"),
        ],
        "changes are recorded"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn cooldown_holds_off_the_next_incident() {
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\ncooldown = \"2m\"",
        ),
        &step("app", "fix", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    assert_eq!(w.incidents().len(), 1);
    let closed = w.incidents()[0].closed_at.unwrap();
    // It breaks again at once: no action inside the cooldown.
    w.set("app", "fail");
    w.runs("app", 5).await;
    assert_eq!(w.incidents().len(), 1, "cooling down");
    assert_eq!(w.calls("actions.log").len(), 1);
    // After the cooldown, the next failure opens a new incident.
    wait(Duration::from_secs(80)).await;
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    let incs = w.incidents();
    assert_eq!(incs.len(), 2);
    assert!(
        incs[1].opened_at >= closed + 120_000,
        "{} vs {}",
        incs[1].opened_at,
        closed
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_attempt_cap_per_window_stops_the_ladder_and_escalates() {
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\nmax_attempts = 1\nwindow = \"1h\"\nbackoff = { base = \"1s\", jitter = 0.0 }",
        ),
        &step("app", "first", "fail", ""),
        &step("app", "second", "ok", ""),
        escalate(),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(30)).await;
    let inc = &w.incidents()[0];
    let outcomes: Vec<(String, AttemptOutcome)> = inc
        .attempts
        .iter()
        .map(|a| (a.action.clone(), a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("first".to_string(), AttemptOutcome::NotHealed),
            ("second".to_string(), AttemptOutcome::Skipped),
            ("fixture-fixer".to_string(), AttemptOutcome::Escalation),
        ]
    );
    assert!(
        inc.attempts[1].detail["reason"]
            .as_str()
            .unwrap()
            .contains("attempt cap")
    );
    assert_eq!(inc.state, IncidentState::Escalated);
    assert_eq!(w.calls("actions.log").len(), 1, "only one attempt ran");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn backoff_spaces_out_ladder_steps() {
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\nbackoff = { base = \"30s\", factor = 2.0, jitter = 0.0, max = \"10m\" }",
        ),
        &step("app", "a", "fail", ""),
        &step("app", "b", "fail", ""),
        &step("app", "c", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(200)).await;
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed);
    let starts: Vec<u64> = inc.attempts.iter().map(|a| a.started_at).collect();
    assert_eq!(starts.len(), 3);
    // settle (5s) + backoff: 30s after the first, 60s after the second.
    let gap1 = starts[1] - starts[0];
    let gap2 = starts[2] - starts[1];
    assert!((35_000..36_000).contains(&gap1), "{gap1}");
    assert!((65_000..66_000).contains(&gap2), "{gap2}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_then_lets_one_probe_through() {
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\ncooldown = \"1s\"\nbreaker = { failures = 1, open_for = \"10m\", max_open_for = \"1h\" }",
        ),
        // The fixer only heals when `healing` says so (the fixer writes the
        // check's file from it: see below).
        &step("app", "fix", "fail", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    // Incident 1: the fix runs but does not heal → breaker opens → escalated.
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    let incs = w.incidents();
    assert_eq!(incs[0].attempts[0].outcome, AttemptOutcome::NotHealed);
    assert_eq!(incs[0].state, IncidentState::Escalated);
    let b = w.engine.store().breaker("app", "fix").unwrap().unwrap();
    assert_eq!(b.name(), "open");
    // It recovers by itself; the escalated incident closes.
    w.set("app", "ok");
    w.runs("app", 2).await;
    assert_eq!(w.incidents()[0].state, IncidentState::Recovered);
    // Incident 2 inside the open window: the step is skipped.
    w.set("app", "fail");
    w.next_run("app").await;
    wait(Duration::from_secs(1)).await;
    let inc2 = w.incidents()[1].clone();
    assert_eq!(
        inc2.attempts[0].outcome,
        AttemptOutcome::Skipped,
        "{inc2:#?}"
    );
    assert!(
        inc2.attempts[0].detail["reason"]
            .as_str()
            .unwrap()
            .contains("circuit breaker")
    );
    assert_eq!(w.calls("actions.log").len(), 1, "no call while open");
    w.set("app", "ok");
    w.runs("app", 2).await;
    // After open_for, one half-open probe runs; it heals, the breaker closes.
    wait(Duration::from_secs(600)).await;
    w.set("app", "fail");
    w.next_run("app").await;
    wait(Duration::from_millis(100)).await;
    // Make the probe heal: the next verification reads "ok".
    w.set("app", "ok");
    wait(Duration::from_secs(8)).await;
    let inc3 = w.incidents()[2].clone();
    assert_eq!(inc3.attempts[0].action, "fix");
    assert_eq!(w.calls("actions.log").len(), 2, "the probe ran: {inc3:#?}");
    assert_eq!(inc3.state, IncidentState::Healed, "{inc3:#?}");
    assert_eq!(
        w.engine
            .store()
            .breaker("app", "fix")
            .unwrap()
            .unwrap()
            .name(),
        "closed"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_flapping_check_is_escalated_not_remediated() {
    let toml = [
        header(),
        &check("app", ""),
        &policy("fix-app", "app", "trigger = { n = 6, of = 12 }"),
        &step("app", "fix", "ok", ""),
        escalate(),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "ok")]).await;
    for i in 0..14 {
        w.set("app", if i % 2 == 0 { "fail" } else { "ok" });
        w.next_run("app").await;
    }
    wait(Duration::from_secs(8)).await;
    assert!(
        w.calls("actions.log").is_empty(),
        "no automatic action on a flapping check"
    );
    let incs = w.incidents();
    assert_eq!(incs.len(), 1, "{incs:#?}");
    assert_eq!(incs[0].state, IncidentState::Escalated);
    assert_eq!(incs[0].diagnosis["decision"], "escalate");
    assert!(
        incs[0].diagnosis["reason"]
            .as_str()
            .unwrap()
            .contains("flapping")
    );
    assert_eq!(w.calls("escalations.log").len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_root_cause_is_remediated_and_dependents_hold() {
    let toml = [
        header(),
        &check("db", ""),
        &check("app", "depends_on = [\"db\"]"),
        &policy("fix-db", "db", "trigger = { consecutive = 2 }"),
        &step("db", "restart-db", "ok", ""),
        &policy("fix-app", "app", "trigger = { consecutive = 2 }"),
        &step("app", "restart-app", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("db", "fail"), ("app", "fail")]).await;
    wait(Duration::from_secs(60)).await;
    let incs = w.incidents();
    let db = incs
        .iter()
        .find(|i| i.policy == "fix-db")
        .expect("db remediated");
    assert_eq!(db.state, IncidentState::Healed);
    // app was held while db failed; its own incident (app still fails) only
    // opens after db healed.
    if let Some(app) = incs.iter().find(|i| i.policy == "fix-app") {
        assert!(
            app.opened_at >= db.closed_at.unwrap(),
            "app acted while db was failing: {incs:#?}"
        );
    }
    let lines = w.calls("actions.log");
    assert!(lines[0].starts_with("db "), "{lines:?}");
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn adaptive_ladders_try_what_healed_before_first() {
    let toml = [
        header(),
        &check("app", ""),
        &policy("fix-app", "app", "trigger = { consecutive = 1 }\ncooldown = \"1s\"\nadaptive = true\nbackoff = { base = \"1s\", jitter = 0.0 }"),
        &step("app", "gentle", "fail", ""),
        &step("app", "firm", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(30)).await;
    let first = &w.incidents()[0];
    let order: Vec<&str> = first.attempts.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(order, vec!["gentle", "firm"]);
    w.set("app", "fail");
    w.next_run("app").await;
    wait(Duration::from_secs(30)).await;
    let second = &w.incidents()[1];
    assert_eq!(second.attempts[0].action, "firm", "{second:#?}");
    assert_eq!(
        second.diagnosis["plan"],
        serde_json::json!(["firm", "gentle"])
    );
    assert_eq!(second.state, IncidentState::Healed);
    let stats = w.engine.store().action_stats().unwrap();
    let firm = stats.iter().find(|s| s.action == "firm").unwrap();
    assert_eq!((firm.attempts, firm.healed), (2, 2));
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn dry_run_records_the_plan_and_changes_nothing() {
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\ndry_run = true",
        ),
        &step("app", "fix", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    assert_eq!(w.read("app"), "fail", "nothing changed");
    assert_eq!(
        w.calls("actions.log"),
        vec!["app dry_run=true codes=scripted.fail"]
    );
    let inc = &w.incidents()[0];
    assert!(inc.dry_run);
    assert_eq!(inc.state, IncidentState::Planned);
    assert_eq!(inc.attempts[0].outcome, AttemptOutcome::Planned);
    assert_eq!(
        inc.attempts[0].detail["outcome"]["steps"][0],
        "would write \"ok\" to /ctl/app"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_ladder_escalates_exactly_once_and_stops() {
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 2 }\nbackoff = { base = \"5s\", jitter = 0.0 }",
        ),
        &step("app", "soft", "fail", ""),
        &step("app", "hard", "fail", ", fail = true"),
        escalate(),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    // Plenty of time for a restart loop to show itself.
    wait(Duration::from_secs(3600)).await;
    assert_eq!(w.calls("actions.log").len(), 2, "each step ran once");
    assert_eq!(
        w.calls("escalations.log").len(),
        1,
        "escalated exactly once"
    );
    let incs = w.incidents();
    assert_eq!(incs.len(), 1);
    let inc = &incs[0];
    assert_eq!(inc.state, IncidentState::Escalated);
    let outcomes: Vec<AttemptOutcome> = inc.attempts.iter().map(|a| a.outcome).collect();
    assert_eq!(
        outcomes,
        vec![
            AttemptOutcome::NotHealed,
            AttemptOutcome::Failed,
            AttemptOutcome::Escalation
        ]
    );
    assert!(
        inc.attempts[1].detail["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fixer told to fail")
    );
    assert!(inc.note.contains("ladder exhausted"));
    // It recovers: the escalated incident closes, and nothing more ran.
    w.set("app", "ok");
    w.runs("app", 2).await;
    assert_eq!(w.incidents()[0].state, IncidentState::Recovered);
    assert_eq!(w.calls("escalations.log").len(), 1);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_plugin_error_is_a_finding_not_a_crash() {
    let toml = [header(), &check("app", "")].concat();
    let w = World::start_with(&toml, &[("app", "error")]).await;
    w.next_run("app").await;
    let snap = w.engine.snapshot();
    let last = snap[0].last.as_ref().unwrap();
    assert_eq!(last.findings[0].code, "plugin.error");
    assert!(last.findings[0].summary.contains("scripted to fail"));
    assert_eq!(snap[0].health, Health::Unknown);
    w.set("app", "ok");
    w.next_run("app").await;
    assert_eq!(w.health("app"), Health::Healthy);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_missing_plugin_turns_its_check_unknown_with_a_clear_error() {
    let toml = [
        header(),
        &check("app", "").replace("fixture-scripted", "no-such-plugin"),
    ]
    .concat();
    let w = World::launch(&toml, &[]).await;
    assert!(w.engine.plugin_errors().contains_key("no-such-plugin"));
    w.next_run("app").await;
    let snap = w.engine.snapshot();
    let f = &snap[0].last.as_ref().unwrap().findings[0];
    assert_eq!(f.code, "plugin.error");
    assert!(
        f.summary.contains("no-such-plugin is not loaded"),
        "{}",
        f.summary
    );
    assert_eq!(snap[0].health, Health::Unknown);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_records_a_check_stuck_past_twice_its_interval() {
    let toml = [header(), &check("app", "limits = { deadline = \"10m\" }")].concat();
    let w = World::start_with(&toml, &[("app", "ok")]).await;
    w.next_run("app").await;
    w.set("app", "sleep 120 ok"); // the plugin blocks for 2 minutes
    wait(Duration::from_secs(60)).await;
    let events = w.engine.store().watchdog_events(10).unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].check, "app");
    assert!(events[0].late_ms >= 10_000);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn maintenance_windows_and_pause_hold_actions() {
    // START is Sunday 00:00 UTC: inside the window until 01:00.
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\nmaintenance = [{ days = [\"sun\"], start = \"00:00\", end = \"01:00\" }]",
        ),
        &step("app", "fix", "ok", ""),
        &check("other", ""),
        &policy("fix-other", "other", "trigger = { consecutive = 1 }\npaused = true"),
        &step("other", "fix-other", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail"), ("other", "fail")]).await;
    wait(Duration::from_secs(50 * 60)).await;
    assert!(
        w.calls("actions.log").is_empty(),
        "no action inside the window"
    );
    assert!(w.incidents().is_empty());
    wait(Duration::from_secs(11 * 60)).await;
    let lines = w.calls("actions.log");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("app "),
        "the paused policy never acts: {lines:?}"
    );
    assert_eq!(w.incidents()[0].policy, "fix-app");
    assert!(w.incidents()[0].opened_at >= START + 3_600_000);
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_window_that_opens_mid_ladder_pauses_it_until_it_closes() {
    // The incident opens at once; the window 00:01–02:00 UTC starts during
    // the backoff before step two, which must wait until 02:00.
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\nbackoff = { base = \"2m\", jitter = 0.0 }\nmaintenance = [{ start = \"00:01\", end = \"02:00\" }]",
        ),
        &step("app", "first", "fail", ""),
        &step("app", "second", "ok", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "fail")]).await;
    wait(Duration::from_secs(3 * 3600)).await;
    let inc = &w.incidents()[0];
    assert_eq!(inc.state, IncidentState::Healed, "{inc:#?}");
    let steps: Vec<(&str, u64)> = inc
        .attempts
        .iter()
        .map(|a| (a.action.as_str(), a.started_at))
        .collect();
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert!(steps[0].1 < START + 60_000, "{steps:?}");
    assert!(
        steps[1].1 >= START + 2 * 3_600_000,
        "step two waited for the window to close: {steps:?}"
    );
    w.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_fix_that_makes_things_worse_is_not_a_heal() {
    let toml = [
        header(),
        &check("app", ""),
        &policy(
            "fix-app",
            "app",
            "trigger = { consecutive = 1 }\nstatus = [\"warn\"]",
        ),
        &step("app", "fix", "fail", ""),
    ]
    .concat();
    let w = World::start_with(&toml, &[("app", "warn")]).await;
    w.next_run("app").await;
    wait(Duration::from_secs(8)).await;
    let inc = &w.incidents()[0];
    assert_eq!(
        inc.attempts[0].outcome,
        AttemptOutcome::NotHealed,
        "warn → fail is worse, not healed"
    );
    assert_eq!(inc.state, IncidentState::Escalated);
    w.stop().await;
}
