//! Fleet mode against the machine's real NATS (JetStream), with agents in
//! this process: each has its own SQLite store and NATS connection, and
//! the test its own bucket and stream names (removed afterwards). A
//! partition is the real store behind a switch (`common::nats::Flaky`);
//! the multi-host tests with real `mend run` processes in network
//! namespaces are in tests/fleet_hosts.rs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

mod common;

use common::nats::{self as nats_env, Agent, Cleanup};
use mend::fleet::{AlertClaim, DenialReason, Holder};
use mend::store::NewIncident;

fn holder(incident: i64) -> Holder {
    Holder {
        policy: "restart-db".into(),
        check: "db".into(),
        incident,
        step: "restart".into(),
    }
}

const K2: &str = r#"
[fleet.budget.restart-db]
max_concurrent = 2
lease_ttl = "30s"
wait = "20s"
"#;

async fn agents(prefix: &str, n: usize, budgets: &str) -> Vec<Agent> {
    let mut out = Vec::new();
    for i in 0..n {
        out.push(Agent::join(prefix, &format!("host-{i}"), budgets).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_more_than_k_hold_a_budget_under_contention() {
    if nats_env::skip() {
        return;
    }
    let prefix = nats_env::unique("k");
    let _clean = Cleanup(prefix.clone());
    let agents = agents(&prefix, 8, K2).await;
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, a) in agents.iter().enumerate() {
        let (fleet, holding, most) = (a.fleet.clone(), holding.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            for round in 0..4 {
                let slot = fleet
                    .acquire("restart-db", &holder((i * 10 + round) as i64))
                    .await
                    .unwrap_or_else(|d| panic!("host-{i} waited in vain: {d}"));
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                slot.release().await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= 2, "{most} held a budget of 2 at once");
    assert_eq!(most, 2, "8 agents contending should fill both slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_names_its_holders_on_the_incident() {
    if nats_env::skip() {
        return;
    }
    let prefix = nats_env::unique("full");
    let _clean = Cleanup(prefix.clone());
    let budgets = K2.replace("wait = \"20s\"", "wait = \"0s\"");
    let a = agents(&prefix, 3, &budgets).await;
    let s0 = a[0].fleet.acquire("restart-db", &holder(1)).await.unwrap();
    let s1 = a[1].fleet.acquire("restart-db", &holder(1)).await.unwrap();
    let id = a[2]
        .db
        .open_incident(&NewIncident {
            policy: "restart-db",
            check: "db",
            opened_at: 1,
            root_cause: "db",
            diagnosis: &serde_json::json!({}),
            dry_run: false,
            severity: mend::contract::Severity::Warning,
        })
        .unwrap();
    let d = a[2]
        .fleet
        .acquire("restart-db", &holder(id))
        .await
        .unwrap_err();
    assert_eq!(d.reason, DenialReason::Full);
    assert_eq!(
        d.message,
        "fleet budget restart-db: 2 of 2 held by host-0, host-1"
    );
    let inc = a[2].db.incident(id).unwrap().unwrap();
    assert_eq!(
        inc.note, d.message,
        "the denial is recorded on the incident"
    );
    s0.release().await;
    // Released: the next one gets it at once.
    let s2 = a[2].fleet.acquire("restart-db", &holder(id)).await.unwrap();
    s1.release().await;
    s2.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_percentage_counts_live_members() {
    if nats_env::skip() {
        return;
    }
    let prefix = nats_env::unique("pct");
    let _clean = Cleanup(prefix.clone());
    let budgets = r#"
[fleet.budget.restart-db]
max_concurrent = "40%"
lease_ttl = "30s"
"#;
    let a = agents(&prefix, 5, budgets).await;
    // Every agent has counted all five (heartbeat 200 ms).
    let start = Instant::now();
    while a.iter().any(|x| x.fleet.live_members() < 5) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "members not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s: Vec<_> = [
        a[0].fleet.acquire("restart-db", &holder(1)).await,
        a[1].fleet.acquire("restart-db", &holder(2)).await,
        a[2].fleet.acquire("restart-db", &holder(3)).await,
    ]
    .into_iter()
    .collect();
    assert!(s[0].is_ok() && s[1].is_ok(), "40% of 5 is 2 slots");
    assert_eq!(s[2].as_ref().unwrap_err().reason, DenialReason::Full);
    for x in s.into_iter().flatten() {
        x.release().await;
    }
    // Three leave: 40% of 2 floors to 0, and a budget is never below 1.
    for x in &a[2..] {
        x.fleet.shutdown().await;
    }
    let start = Instant::now();
    // Both that stay must have counted the departures (their heartbeats
    // are out of phase; asking the one that has not yet is a race).
    while a[..2].iter().any(|x| x.fleet.live_members() != 2) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "departures not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let one = a[0].fleet.acquire("restart-db", &holder(4)).await.unwrap();
    let d = a[1]
        .fleet
        .acquire("restart-db", &holder(5))
        .await
        .unwrap_err();
    assert_eq!(d.reason, DenialReason::Full, "{d}");
    assert!(d.message.contains("1 of 1 held by host-0"), "{d}");
    one.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limits_starts_fleet_wide() {
    if nats_env::skip() {
        return;
    }
    let prefix = nats_env::unique("rate");
    let _clean = Cleanup(prefix.clone());
    let budgets = r#"
[fleet.budget.restart-db]
max_concurrent = 5
rate = "3/1h"
lease_ttl = "30s"
"#;
    let a = agents(&prefix, 2, budgets).await;
    for i in 0..3 {
        let s = a[i % 2]
            .fleet
            .acquire("restart-db", &holder(i as i64))
            .await;
        s.unwrap_or_else(|d| panic!("start {i}: {d}"))
            .release()
            .await;
    }
    let d = a[1]
        .fleet
        .acquire("restart-db", &holder(9))
        .await
        .unwrap_err();
    assert_eq!(d.reason, DenialReason::Rate);
    assert!(
        d.message
            .starts_with("fleet budget restart-db: rate 3/1h used up (next start in ~"),
        "{d}"
    );
    // The denied start took no slot: the slots are all free.
    let st = a[0].fleet.status().await;
    assert_eq!(st.budgets[0].holders.len(), 0, "{st:?}");
    assert_eq!(st.budgets[0].rate_used, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_cut_off_loses_its_lease_before_the_store_frees_the_slot() {
    if nats_env::skip() {
        return;
    }
    let prefix = nats_env::unique("cut");
    let _clean = Cleanup(prefix.clone());
    let budgets = r#"
[fleet.budget.restart-db]
max_concurrent = 1
lease_ttl = "3s"
renew_every = "500ms"
wait = "20s"
"#;
    let a = agents(&prefix, 2, budgets).await;
    let held = a[0].fleet.acquire("restart-db", &holder(1)).await.unwrap();
    // Renewals keep it past its ttl while the store is reachable.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(held.lost().is_none(), "renewed past one ttl");
    let cut = Instant::now();
    a[0].store.set_down(true);
    let waiter = {
        let f = a[1].fleet.clone();
        tokio::spawn(async move {
            let s = f.acquire("restart-db", &holder(2)).await;
            (Instant::now(), s)
        })
    };
    let why = held.lease_lost().await;
    let lost_at = Instant::now();
    let (granted_at, other) = waiter.await.unwrap();
    let other = other.expect("the other agent gets the slot once it expires");
    assert!(
        lost_at <= granted_at,
        "the cut-off holder stopped ({:?} after the cut) before the other was granted ({:?})",
        lost_at - cut,
        granted_at - cut
    );
    assert!(
        lost_at - cut <= Duration::from_secs(3),
        "lost within a ttl of the last renewal"
    );
    assert_eq!(why.as_str(), "expired");
    // A guarded action under the lost lease does not even start.
    let ran = mend::fleet::guarded(Some(&held), async { true }).await;
    assert!(ran.is_err());
    held.release().await;
    other.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_denies_or_falls_back_to_the_local_limit() {
    if nats_env::skip() {
        return;
    }
    let prefix = nats_env::unique("down");
    let _clean = Cleanup(prefix.clone());
    let budgets = r#"
[fleet.budget.deny]
max_concurrent = 5
lease_ttl = "30s"

[fleet.budget.local]
max_concurrent = 5
lease_ttl = "30s"
when_unreachable = "local"
local_max = 2
"#;
    let a = Agent::join(&prefix, "host-0", budgets).await;
    a.store.set_down(true);
    let d = a.fleet.acquire("deny", &holder(1)).await.unwrap_err();
    assert_eq!(d.reason, DenialReason::Unreachable);
    assert!(d.message.contains("when_unreachable = \"deny\""), "{d}");
    let l1 = a.fleet.acquire("local", &holder(2)).await.unwrap();
    let l2 = a.fleet.acquire("local", &holder(3)).await.unwrap();
    assert!(l1.is_local() && l2.is_local());
    let d = a.fleet.acquire("local", &holder(4)).await.unwrap_err();
    assert_eq!(d.reason, DenialReason::LocalFull, "{d}");
    l1.release().await;
    let l3 = a.fleet.acquire("local", &holder(5)).await.unwrap();
    l2.release().await;
    l3.release().await;
    // Reachable again: real slots.
    a.store.set_down(false);
    let s = a.fleet.acquire("local", &holder(6)).await.unwrap();
    assert!(!s.is_local());
    s.release().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_alert_offered_to_every_agent_is_taken_once() {
    if nats_env::skip() {
        return;
    }
    let prefix = nats_env::unique("alert");
    let _clean = Cleanup(prefix.clone());
    let a = agents(&prefix, 6, "").await;
    let mut tasks = Vec::new();
    for x in &a {
        let f = x.fleet.clone();
        tasks.push(tokio::spawn(async move {
            f.claim_alert("d41d8cd98f00b204", "2026-11-22T10:00:00Z")
                .await
                .unwrap()
        }));
    }
    let mut claims = Vec::new();
    for t in tasks {
        claims.push(t.await.unwrap());
    }
    let winners: Vec<usize> = (0..claims.len())
        .filter(|&i| claims[i] == AlertClaim::Won)
        .collect();
    assert_eq!(winners.len(), 1, "{claims:?}");
    let winner = format!("host-{}", winners[0]);
    for c in &claims {
        if let AlertClaim::Taken { winner: w } = c {
            assert_eq!(w, &winner);
        }
    }
    // A new firing of the same alert is a new occurrence.
    assert_eq!(
        a[3].fleet
            .claim_alert("d41d8cd98f00b204", "2026-11-22T12:00:00Z")
            .await
            .unwrap(),
        AlertClaim::Won
    );
}
