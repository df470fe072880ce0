//! `GET /api/v1/fleet` and `mend fleet status`: the members, each budget
//! with its holders, and (with `[fleet.recorder]`) the fleet-wide
//! incidents from PostgreSQL. All of it is reads, possibly a little stale;
//! none of it is used to decide anything.

use std::time::Duration;

use serde::Serialize;

use super::budget::SlotValue;
use super::members::MemberInfo;
use super::{Fleet, recorder};

#[derive(Debug, Clone, Serialize)]
pub struct FleetStatus {
    pub agent: String,
    pub store: &'static str,
    /// The store answered just now.
    pub reachable: bool,
    pub error: Option<String>,
    pub members: Vec<MemberInfo>,
    pub budgets: Vec<BudgetStatus>,
    /// Slots kept from before a restart, waiting for their incident.
    pub adopted: usize,
    /// Fleet-wide incidents, newest first (from the recorder's database).
    pub incidents: Option<Vec<recorder::IncidentRow>>,
    pub incidents_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    pub name: String,
    /// As configured: `2` or `10%`.
    pub max_concurrent: String,
    /// Slots open now (percentages follow the live members).
    pub slots: u32,
    pub holders: Vec<HolderStatus>,
    pub rate: Option<String>,
    /// Starts counted in the rate's window.
    pub rate_used: Option<usize>,
    pub lease_ttl_ms: u64,
    pub when_unreachable: &'static str,
    /// Holders here under the local limit.
    pub local_held: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct HolderStatus {
    pub slot: String,
    pub agent: String,
    pub policy: String,
    pub check: String,
    pub incident: i64,
    pub step: String,
    pub since: u64,
}

impl Fleet {
    pub async fn status(&self) -> FleetStatus {
        let mut st = FleetStatus {
            agent: self.agent.clone(),
            store: self.store.kind(),
            reachable: true,
            error: None,
            members: Vec::new(),
            budgets: Vec::new(),
            adopted: self.adopted_count(),
            incidents: None,
            incidents_error: None,
        };
        match self.member_list().await {
            Ok(m) => st.members = m,
            Err(e) => {
                st.reachable = false;
                st.error = Some(e.to_string());
            }
        }
        let live = st.members.len().max(1);
        for b in self.budget_list() {
            let max = *b.config.max_concurrent.get_ref();
            let mut bs = BudgetStatus {
                name: b.name.clone(),
                max_concurrent: max.to_string(),
                slots: max.slots(live),
                holders: Vec::new(),
                rate: b.config.rate.map(|r| r.to_string()),
                rate_used: None,
                lease_ttl_ms: b.terms.ttl.as_millis() as u64,
                when_unreachable: match b.config.when_unreachable {
                    crate::config::fleet::WhenUnreachable::Deny => "deny",
                    crate::config::fleet::WhenUnreachable::Local => "local",
                },
                local_held: b.local_held(),
            };
            if st.reachable {
                if let Ok(entries) = self.store.entries(&self.slots_bucket(&b.name)).await {
                    for e in entries {
                        if let Ok(v) = serde_json::from_slice::<SlotValue>(&e.value) {
                            bs.holders.push(HolderStatus {
                                slot: e.key,
                                agent: v.agent,
                                policy: v.holder.policy,
                                check: v.holder.check,
                                incident: v.holder.incident,
                                step: v.holder.step,
                                since: v.since,
                            });
                        }
                    }
                }
                if b.config.rate.is_some() {
                    bs.rate_used = self
                        .store
                        .entries(&self.rate_bucket(&b.name))
                        .await
                        .ok()
                        .map(|e| e.len());
                }
            }
            st.budgets.push(bs);
        }
        if let Some(rec) = &self.recorder {
            match tokio::time::timeout(
                rec.timeout.0.max(Duration::from_secs(1)),
                recorder::recent_incidents(rec, 50),
            )
            .await
            {
                Ok(Ok(rows)) => st.incidents = Some(rows),
                Ok(Err(e)) => st.incidents_error = Some(format!("{e:#}")),
                Err(_) => st.incidents_error = Some("PostgreSQL did not answer in time".into()),
            }
        }
        st
    }
}
