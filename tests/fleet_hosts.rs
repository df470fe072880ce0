//! Fleet mode across hosts: five agents, each a real `mend run` process
//! in a network namespace of its own, NATS (JetStream) in a sixth, all on
//! a bridge this test creates (`common::netns`; addresses exist only
//! inside). Real remediation cycles: the scripted detector fails when the
//! test says so, the fixer action repairs. Claims are checked on the
//! agents' merged audit logs (`mend::fleet::audit`, JSON), on their SQLite
//! stores and on PostgreSQL (the recorder's view).
//!
//! Needs root, iproute2 and nats-server (scripts/test installs them, and
//! nftables); without them each test says why it skipped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

mod common;

use common::netns::{self, Lab};
use common::postgres::ScratchDb;
use common::process::wait_for;
use mend::store::{IncidentState, Store};
use mend_test_artifacts as artifacts;
use serde_json::Value;

/// One lab at a time: each runs six hosts on two cores.
static SERIAL: Mutex<()> = Mutex::new(());

const NATS_PORT: u16 = 14222;
const AGENTS: usize = 5;
const TOKEN: &str = "lab-token";

struct Agent {
    host: usize,
    name: String,
    state: PathBuf,
    ctl: PathBuf,
    config: PathBuf,
    /// One log per run of `mend run`.
    logs: Vec<PathBuf>,
    proc: Option<usize>,
}

struct Fleet {
    lab: Lab,
    dir: tempfile::TempDir,
    agents: Vec<Agent>,
}

/// What a test varies in each agent's mend.toml.
struct Setup<'a> {
    budget: &'a str,
    /// Checks per agent (`app0`, `app1`...), each with its own policy.
    checks: usize,
    /// Every agent's checks read one shared control file.
    shared: bool,
    trigger: u32,
    extra: &'a str,
}

fn fleet(setup: &Setup<'_>) -> Fleet {
    let mut lab = Lab::new(AGENTS + 1);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    for p in [artifacts::SCRIPTED, artifacts::FIXER] {
        std::fs::copy(p, plugins.join(Path::new(p).file_name().unwrap())).unwrap();
    }
    let nats_dir = dir.path().join("nats");
    std::fs::create_dir(&nats_dir).unwrap();
    let nats_log = dir.path().join("nats.log");
    lab.spawn(
        0,
        &netns::which("nats-server").unwrap(),
        &[
            "-js",
            "-a",
            &lab.addr(0),
            "-p",
            &NATS_PORT.to_string(),
            "-sd",
            nats_dir.to_str().unwrap(),
            "--server_name",
            "lab",
        ],
        &nats_log,
    );
    wait_for("NATS in the lab", Duration::from_secs(20), || {
        std::fs::read_to_string(&nats_log).is_ok_and(|l| l.contains("Server is ready"))
    });
    let shared_ctl = dir.path().join("ctl-shared");
    std::fs::create_dir(&shared_ctl).unwrap();
    let mut agents = Vec::new();
    for i in 1..=AGENTS {
        let name = format!("host-{i}");
        let state = dir.path().join(&name);
        let ctl = if setup.shared {
            shared_ctl.clone()
        } else {
            state.join("ctl")
        };
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(&ctl).unwrap();
        for c in 0..setup.checks {
            std::fs::write(ctl.join(format!("app{c}")), "ok").unwrap();
        }
        let config = state.join("mend.toml");
        std::fs::write(&config, agent_config(&lab, &name, &plugins, &ctl, setup)).unwrap();
        agents.push(Agent {
            host: i,
            name,
            state,
            ctl,
            config,
            logs: Vec::new(),
            proc: None,
        });
    }
    let mut f = Fleet { lab, dir, agents };
    for i in 0..AGENTS {
        f.start(i);
    }
    for i in 0..AGENTS {
        f.wait_joined(i);
    }
    f
}

fn agent_config(lab: &Lab, name: &str, plugins: &Path, ctl: &Path, s: &Setup<'_>) -> String {
    let ctl = ctl.display();
    let mut text = format!(
        r#"
[engine]
plugins_dir = "{plugins}"
# mend's own state apart from the directory its plugins are granted.
state_dir = "state"
interval = "500ms"
limits = {{ deadline = "2s" }}

[api]
listen = "127.0.0.1:9770"
token = "{TOKEN}"

[fleet]
servers = ["nats://{nats}:{NATS_PORT}"]
agent_id = "{name}"
prefix = "lab"
heartbeat = "500ms"
request_timeout = "1s"

[fleet.budget.restart]
{budget}
{extra}
"#,
        plugins = plugins.display(),
        nats = lab.addr(0),
        budget = s.budget,
        extra = s.extra,
    );
    for c in 0..s.checks {
        text.push_str(&format!(
            r#"
[[check]]
name = "app{c}"
plugin = "fixture-scripted"
jitter = "0s"
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl" }}] }}
config = {{ file = "/ctl/app{c}" }}

[[policy]]
name = "fix-app{c}"
check = "app{c}"
trigger = {{ consecutive = {trigger} }}
cooldown = "1s"
# Each round is a new problem, not a relapse of the last heal.
relapse_window = "0s"
backoff = {{ base = "100ms", jitter = 0.0 }}

[[policy.step]]
name = "fix-slow"
action = "fixture-fixer"
settle = "200ms"
budget = "restart"
limits = {{ deadline = "6s" }}
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/app{c}", log = "/ctl/actions.log", slow_flag = "/ctl/slow", slow_secs = 3, write = "fail" }}

[[policy.step]]
name = "fix"
action = "fixture-fixer"
settle = "200ms"
budget = "restart"
limits = {{ deadline = "6s" }}
grants = {{ dirs = [{{ host = "{ctl}", guest = "/ctl", mode = "rw" }}] }}
config = {{ file = "/ctl/app{c}", log = "/ctl/actions.log", slow_flag = "/ctl/slow", slow_secs = 3 }}
"#,
            trigger = s.trigger
        ));
    }
    text
}

impl Fleet {
    fn start(&mut self, i: usize) {
        let a = &mut self.agents[i];
        let log = a.state.join(format!("mend-{}.log", a.logs.len()));
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_mend"));
        let p = self.lab.spawn_env(
            a.host,
            &bin,
            &[
                "run",
                "--log-format",
                "json",
                "--config",
                a.config.to_str().unwrap(),
            ],
            &[("MEND_LOG", "info")],
            &log,
        );
        a.logs.push(log);
        a.proc = Some(p);
    }

    fn wait_joined(&self, i: usize) {
        let log = self.agents[i].logs.last().unwrap().clone();
        wait_for(
            &format!("{} to join the fleet", self.agents[i].name),
            Duration::from_secs(90),
            || std::fs::read_to_string(&log).is_ok_and(|l| l.contains("mend is running")),
        );
    }

    fn kill9(&mut self, i: usize) {
        if let Some(p) = self.agents[i].proc.take() {
            self.lab.kill9(p);
        }
    }

    fn fail(&self, i: usize, check: usize) {
        std::fs::write(self.agents[i].ctl.join(format!("app{check}")), "fail").unwrap();
    }

    /// Incidents of agent `i` closed as healed.
    fn healed_incidents(&self, i: usize) -> usize {
        common::process::incidents(&self.db(i))
            .iter()
            .filter(|x| x.state == IncidentState::Healed)
            .count()
    }

    fn healed(&self, i: usize, check: usize) -> bool {
        std::fs::read_to_string(self.agents[i].ctl.join(format!("app{check}")))
            .is_ok_and(|s| s.trim() == "ok")
    }

    /// The audit trail of every run of every agent, by time.
    fn audit(&self) -> Vec<Ev> {
        let mut all: Vec<Ev> = self
            .agents
            .iter()
            .flat_map(|a| a.logs.iter().enumerate().flat_map(|(run, l)| audit(l, run)))
            .collect();
        all.sort_by_key(|e| e.at);
        all
    }

    fn audit_of(&self, i: usize) -> Vec<Ev> {
        self.audit()
            .into_iter()
            .filter(|e| e.agent == self.agents[i].name)
            .collect()
    }

    fn db(&self, i: usize) -> PathBuf {
        self.agents[i].state.join("state/mend.db")
    }

    /// POSTs an Alertmanager webhook to agent `i`'s API (inside its host).
    fn alert(&self, i: usize, body: &str) -> String {
        let out = self
            .lab
            .command(self.agents[i].host, &netns::which("curl").expect("curl"))
            .args([
                "-s",
                "-m",
                "20",
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
                "-H",
                "Content-Type: application/json",
                "-d",
                body,
                "http://127.0.0.1:9770/api/v1/alertmanager",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// One audit line.
#[derive(Debug, Clone)]
struct Ev {
    agent: String,
    /// Which run of the agent's `mend run` wrote it.
    run: usize,
    event: String,
    slot: String,
    step: String,
    at: u64,
    sent: u64,
    deadline: u64,
    ttl: u64,
    note: String,
}

fn audit(log: &Path, run: usize) -> Vec<Ev> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "mend::fleet::audit")
        .map(|v| {
            let f = &v["fields"];
            let n = |k: &str| f[k].as_u64().unwrap_or(0);
            let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
            Ev {
                agent: s("agent"),
                run,
                event: s("event"),
                slot: s("slot"),
                step: s("step"),
                at: n("at_ms"),
                sent: n("sent_ms"),
                deadline: n("deadline_ms"),
                ttl: n("ttl_ms"),
                note: s("note"),
            }
        })
        .collect()
}

/// A hold on the store: from the grant's acknowledgement to the release
/// (logged before it is sent) or the loss; a holder that died holds until
/// the store expires it (`sent + ttl` of its last write).
#[derive(Debug, Clone)]
struct Hold {
    agent: String,
    slot: String,
    from: u64,
    to: u64,
    died: bool,
}

fn holds(events: &[Ev], killed: &[(String, usize)]) -> Vec<Hold> {
    let mut open: BTreeMap<(String, usize, String), (u64, u64)> = BTreeMap::new();
    let mut out = Vec::new();
    for e in events {
        let key = (e.agent.clone(), e.run, e.slot.clone());
        match e.event.as_str() {
            "acquired" | "resumed" => {
                open.insert(key, (e.at, e.sent + e.ttl));
            }
            "readopted" => {}
            "renewed" => {
                if let Some(h) = open.get_mut(&key) {
                    h.1 = e.sent + e.ttl;
                }
            }
            "released" | "lost" => {
                if let Some((from, _)) = open.remove(&key) {
                    out.push(Hold {
                        agent: e.agent.clone(),
                        slot: e.slot.clone(),
                        from,
                        to: e.at,
                        died: false,
                    });
                }
            }
            _ => {}
        }
    }
    let now = common_now_ms();
    for ((agent, run, slot), (from, expires)) in open {
        let died = killed.contains(&(agent.clone(), run));
        if !died {
            // Still holding (its release not logged yet).
            out.push(Hold {
                agent,
                slot,
                from,
                to: now,
                died,
            });
            continue;
        }
        // A resumed hold ends the dead run's on the same slot.
        let resumed = events
            .iter()
            .find(|e| e.agent == agent && e.run > run && e.slot == slot && e.event == "resumed")
            .map(|e| e.at);
        out.push(Hold {
            agent,
            slot,
            from,
            to: resumed.map_or(expires, |r| r.min(expires)),
            died: true,
        });
    }
    out
}

/// The most holds at any instant.
fn most_at_once(holds: &[Hold]) -> usize {
    let mut edges: Vec<(u64, i32)> = Vec::new();
    for h in holds {
        edges.push((h.from, 1));
        edges.push((h.to, -1));
    }
    // At equal times, an end comes before a start.
    edges.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    most as usize
}

const K2: &str = r#"max_concurrent = 2
lease_ttl = "10s"
renew_every = "1s"
wait = "60s""#;

#[test]
fn the_budget_holds_across_hosts_and_a_killed_holder_frees_its_slot_then_resumes() {
    if netns::skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut f = fleet(&Setup {
        budget: K2,
        checks: 1,
        shared: false,
        trigger: 1,
        extra: "",
    });
    for i in 0..AGENTS {
        std::fs::write(f.agents[i].ctl.join("slow"), "").unwrap();
        f.fail(i, 0);
    }
    // The first holder, a second into its slow action, dies.
    let victim = {
        let mut found = None;
        wait_for("a first holder", Duration::from_secs(60), || {
            found = f.audit().into_iter().find(|e| e.event == "acquired");
            found.is_some()
        });
        let e = found.unwrap();
        f.agents.iter().position(|a| a.name == e.agent).unwrap()
    };
    std::thread::sleep(Duration::from_secs(1));
    f.kill9(victim);
    let killed_at = common_now_ms();
    let dead = f.audit_of(victim);
    let last = dead
        .iter()
        .rev()
        .find(|e| e.event == "acquired" || e.event == "renewed")
        .cloned()
        .unwrap();
    let expires = last.sent + last.ttl;
    // Its slot goes to another agent, not before the store expires it and
    // within a lease ttl of the kill.
    let mut taken = None;
    wait_for(
        "the dead holder's slot to be taken",
        Duration::from_secs(40),
        || {
            taken = f.audit().into_iter().find(|e| {
                e.event == "acquired"
                    && e.slot == last.slot
                    && e.at > killed_at
                    && e.agent != last.agent
            });
            taken.is_some()
        },
    );
    let taken = taken.unwrap();
    assert!(
        taken.at >= expires,
        "{} took {} at {} before the store expired it at {expires}",
        taken.agent,
        taken.slot,
        taken.at
    );
    assert!(
        taken.at <= killed_at + last.ttl + 3000,
        "the slot freed {} ms after the kill (ttl {})",
        taken.at - killed_at,
        last.ttl
    );
    // Restarted, the victim finds the slot gone, and its incident resumes
    // at the next step, under a new slot.
    f.start(victim);
    wait_for("every agent healed", Duration::from_secs(120), || {
        (0..AGENTS).all(|i| f.healed_incidents(i) == 1)
    });
    let after = audit(f.agents[victim].logs.last().unwrap(), 1);
    assert!(
        after.iter().any(|e| e.event == "expired-while-down"),
        "the restart settled the old slot: {after:?}"
    );
    let inc = &common::process::incidents(&f.db(victim))[0];
    let outcomes: Vec<_> = inc
        .attempts
        .iter()
        .map(|a| (a.action.clone(), a.outcome))
        .collect();
    assert_eq!(inc.state, IncidentState::Healed, "{outcomes:?}");
    assert_eq!(
        outcomes[0].1,
        mend::store::AttemptOutcome::Interrupted,
        "{outcomes:?}"
    );

    // A second victim restarts at once: it keeps its slot for its incident.
    for i in 0..AGENTS {
        f.fail(i, 0);
    }
    let (victim2, slot2) = {
        let mut found = None;
        let since = common_now_ms();
        wait_for(
            "a holder in the second round",
            Duration::from_secs(60),
            || {
                // Killed in its first step, its incident has a step to resume.
                found = f.audit().into_iter().find(|e| {
                    e.event == "acquired"
                        && e.step == "fix-slow"
                        && e.at > since
                        && e.agent != f.agents[victim].name
                });
                found.is_some()
            },
        );
        let e = found.unwrap();
        (
            f.agents.iter().position(|a| a.name == e.agent).unwrap(),
            e.slot,
        )
    };
    std::thread::sleep(Duration::from_millis(500));
    f.kill9(victim2);
    f.start(victim2);
    wait_for("every agent healed again", Duration::from_secs(120), || {
        (0..AGENTS).all(|i| f.healed_incidents(i) == 2)
    });
    let run = f.agents[victim2].logs.len() - 1;
    let after = audit(f.agents[victim2].logs.last().unwrap(), run);
    let resumed = after.iter().find(|e| e.event == "resumed");
    assert!(
        resumed.is_some_and(|e| e.slot == slot2),
        "restarted within its lease, it kept {slot2}: {after:?}"
    );
    assert!(
        after.iter().any(|e| e.event == "readopted"),
        "its resumed incident took the kept slot back: {after:?}"
    );

    // The merged log: never more than 2 holders, the dead counted until
    // their leases expired.
    let killed: Vec<(String, usize)> = vec![
        (f.agents[victim].name.clone(), 0),
        (
            f.agents[victim2].name.clone(),
            f.agents[victim2].logs.len() - 2,
        ),
    ];
    let events = f.audit();
    let h = holds(&events, &killed);
    let most = most_at_once(&h);
    assert!(most <= 2, "{most} holders at once: {h:#?}");
    assert_eq!(most, 2, "five agents contending filled both slots");
    for d in h.iter().filter(|x| x.died) {
        assert!(
            killed.iter().any(|(name, _)| name == &d.agent),
            "only the killed die: {d:?}"
        );
    }
    assert!(
        h.iter()
            .any(|x| x.died && x.agent == f.agents[victim].name && x.slot == last.slot),
        "the first victim's hold counts until its lease expired: {h:#?}"
    );
    assert!(
        h.iter().filter(|x| !x.died).count() >= 2 * AGENTS - 1,
        "every agent held a slot: {h:#?}"
    );
    let _ = &f.dir;
}

fn common_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn a_partitioned_agent_under_deny_acquires_nothing_and_its_hold_ends_by_its_deadline() {
    if netns::skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let f = fleet(&Setup {
        budget: K2,
        checks: 1,
        shared: false,
        trigger: 1,
        extra: "",
    });
    if !f.lab.nft {
        eprintln!("note: nft missing; partitioning by taking the link down");
    }
    let p = 0;
    std::fs::write(f.agents[p].ctl.join("slow"), "").unwrap();
    f.fail(p, 0);
    wait_for("the holder to start", Duration::from_secs(60), || {
        f.audit_of(p).iter().any(|e| e.event == "acquired")
    });
    std::thread::sleep(Duration::from_millis(1500));
    let cut = common_now_ms();
    f.lab.partition(f.agents[p].host);
    // The hold straddling the partition ends (release or loss) by the
    // deadline of its last confirmed write.
    wait_for(
        "the straddling hold to end",
        Duration::from_secs(30),
        || {
            f.audit_of(p)
                .iter()
                .any(|e| e.event == "released" || e.event == "lost")
        },
    );
    let ev = f.audit_of(p);
    let last_ok = ev
        .iter()
        .rfind(|e| (e.event == "acquired" || e.event == "renewed") && e.at < cut + 1000)
        .cloned()
        .unwrap();
    let end = ev
        .iter()
        .find(|e| e.event == "released" || e.event == "lost")
        .cloned()
        .unwrap();
    assert!(
        end.at <= last_ok.deadline,
        "the hold ended at {} after its deadline {}",
        end.at,
        last_ok.deadline
    );
    // Partitioned, it acquires nothing, while another agent still can.
    std::fs::remove_file(f.agents[p].ctl.join("slow")).unwrap();
    f.fail(p, 0);
    f.fail(1, 0);
    wait_for(
        "the reachable agent to heal",
        Duration::from_secs(60),
        || f.healed(1, 0),
    );
    wait_for("denials while partitioned", Duration::from_secs(30), || {
        f.audit_of(p)
            .iter()
            .filter(|e| e.event == "denied" && e.at > end.at)
            .count()
            >= 2
    });
    let during = common_now_ms();
    let ev = f.audit_of(p);
    assert!(
        !ev.iter()
            .any(|e| e.event.starts_with("acquired") && e.at > end.at && e.at <= during),
        "acquired while partitioned: {ev:?}"
    );
    assert!(
        ev.iter()
            .filter(|e| e.event == "denied" && e.at > end.at)
            .all(|e| e.note == "unreachable"),
        "{ev:?}"
    );
    let db = Store::open_read_only(&f.db(p)).unwrap();
    let open = db
        .open_incident_for("fix-app0")
        .unwrap()
        .expect("still open");
    assert!(
        open.note.contains("the store is unreachable") && open.note.contains("deny"),
        "the denial is on the incident: {:?}",
        open.note
    );
    assert!(!f.healed(p, 0));
    // Healed, it acquires and remediates.
    f.lab.heal(f.agents[p].host);
    wait_for(
        "the partitioned agent to heal after",
        Duration::from_secs(60),
        || f.healed(p, 0),
    );
}

#[test]
fn a_partitioned_agent_under_local_stays_within_its_local_limit() {
    if netns::skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let budget = format!("{K2}\nwhen_unreachable = \"local\"\nlocal_max = 1");
    let f = fleet(&Setup {
        budget: &budget,
        checks: 3,
        shared: false,
        trigger: 1,
        extra: "",
    });
    let p = 2;
    f.lab.partition(f.agents[p].host);
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(f.agents[p].ctl.join("slow"), "").unwrap();
    for c in 0..3 {
        f.fail(p, c);
    }
    wait_for(
        "all three checks healed locally",
        Duration::from_secs(120),
        || (0..3).all(|c| f.healed(p, c)),
    );
    let ev = f.audit_of(p);
    let (mut now, mut most, mut grants) = (0i32, 0i32, 0);
    for e in &ev {
        match e.event.as_str() {
            "acquired-local" => {
                now += 1;
                grants += 1;
            }
            "released-local" => now -= 1,
            "acquired" => panic!("a store slot while partitioned: {ev:?}"),
            _ => {}
        }
        most = most.max(now);
    }
    assert_eq!(most, 1, "local_max = 1: {ev:?}");
    assert!(
        grants >= 3,
        "each check acted under the local limit: {ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.event == "denied" && e.note == "local-full"),
        "the others waited for the local slot: {ev:?}"
    );
    f.lab.heal(f.agents[p].host);
}

#[test]
fn one_alert_sent_to_every_agent_is_remediated_once_and_recorded_once() {
    if netns::skip() || common::postgres::skip() {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let db = ScratchDb::new();
    let recorder = format!(
        "\n[fleet.recorder]\npostgres = \"host=/var/run/postgresql user=postgres dbname={}\"",
        db.name
    );
    let alert_rule = "\n[[api.alert]]\nalertname = \"AppDown\"\ncheck = \"app0\"\n";
    let mut f = fleet(&Setup {
        budget: "max_concurrent = 5\nlease_ttl = \"10s\"",
        checks: 1,
        shared: true,
        // Only the alert starts a heal: the schedule never fires.
        trigger: 1000,
        extra: &format!("{recorder}{alert_rule}"),
    });
    // Two recorder replicas on one durable consumer, in the NATS host
    // (PostgreSQL through its Unix socket).
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mend"));
    for r in 0..2 {
        let log = f.dir.path().join(format!("recorder-{r}.log"));
        let cfg = f.agents[r].config.to_str().unwrap().to_string();
        f.lab.spawn_env(
            0,
            &bin,
            &["recorder", "--log-format", "json", "--config", &cfg],
            &[("MEND_LOG", "info")],
            &log,
        );
    }
    f.fail(0, 0);
    let body = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"AppDown","instance":"app"},"startsAt":"2026-11-22T10:00:00Z","fingerprint":"5f1c0e1b2a3d4c5e"}]}"#;
    let threads: Vec<_> = (0..AGENTS)
        .map(|i| {
            let lab_cmd = f
                .lab
                .command(f.agents[i].host, &netns::which("curl").unwrap());
            let body = body.to_string();
            std::thread::spawn(move || {
                let mut c = lab_cmd;
                c.args([
                    "-s",
                    "-m",
                    "20",
                    "-H",
                    &format!("Authorization: Bearer {TOKEN}"),
                    "-H",
                    "Content-Type: application/json",
                    "-d",
                    &body,
                    "http://127.0.0.1:9770/api/v1/alertmanager",
                ]);
                String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
            })
        })
        .collect();
    let replies: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let healing = replies
        .iter()
        .filter(|r| r.contains("\"healing\":[{"))
        .count();
    assert_eq!(
        healing, 1,
        "exactly one agent takes the alert: {replies:#?}"
    );
    wait_for("the heal", Duration::from_secs(60), || f.healed(0, 0));
    // Redelivery (Alertmanager retries) changes nothing.
    let again = f.alert(3, body);
    assert!(again.contains("\"duplicates\":1"), "{again}");
    std::thread::sleep(Duration::from_secs(2));
    // One ladder: its first step does not heal, its second does.
    let actions = std::fs::read_to_string(f.agents[0].ctl.join("actions.log")).unwrap();
    assert_eq!(actions.lines().count(), 2, "one remediation: {actions}");
    let incidents: usize = (0..AGENTS)
        .map(|i| common::process::incidents(&f.db(i)).len())
        .sum();
    assert_eq!(incidents, 1);
    // PostgreSQL holds that incident once, closed as healed, and the claim.
    wait_for("the recorder", Duration::from_secs(60), || {
        db.psql("SELECT count(*) FROM mend_incidents WHERE state = 'healed'") == "1"
    });
    assert_eq!(db.psql("SELECT count(*) FROM mend_incidents"), "1");
    assert_eq!(
        db.psql("SELECT count(*) FROM mend_events WHERE kind = 'alert'"),
        "1"
    );
    let dupes = db.psql(
        "SELECT count(*) FROM (SELECT id FROM mend_events GROUP BY id HAVING count(*) > 1) d",
    );
    assert_eq!(dupes, "0");
    let winner = db.psql("SELECT data->>'winner' FROM mend_events WHERE kind = 'alert'");
    let agent = db.psql("SELECT agent FROM mend_incidents");
    assert_eq!(winner, agent, "the winner is recorded");
    // `mend fleet status` on any agent shows the fleet and that incident.
    let out = f
        .lab
        .command(f.agents[4].host, Path::new(env!("CARGO_BIN_EXE_mend")))
        .args(["fleet", "status"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("members (5)"), "{text}");
    assert!(text.contains("budget restart: 0 of 5 held"), "{text}");
    assert!(text.contains("fleet-wide incidents (1)"), "{text}");
    assert!(text.contains(&agent) && text.contains("healed"), "{text}");
}
