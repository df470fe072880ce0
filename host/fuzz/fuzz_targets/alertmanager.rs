//! The Alertmanager webhook body as `POST /api/v1/alertmanager` reads it,
//! against the rules of a config. Properties: only a JSON object with
//! object alerts is taken; a rule matches only an alert carrying its
//! alertname and labels; two different occurrences never share a dedup
//! key (one would be dropped as a repeat of the other).
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use mend::config::api::AlertRule;

const RULES: &str = r#"
[[api.alert]]
alertname = "DiskFull"
check = "disk"

[[api.alert]]
alertname = "Down"
labels = { service = "web", env = "prod" }
check = "web"
"#;

fn rules() -> &'static [AlertRule] {
    static RULES_: OnceLock<Vec<AlertRule>> = OnceLock::new();
    RULES_.get_or_init(|| {
        let parsed = mend::config::parse_partial(RULES, Path::new("rules.toml"), |_| None);
        let rules = parsed.config.unwrap().api.alerts;
        assert_eq!(rules.len(), 2);
        rules
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let rules = rules();
    let Ok(alerts) = mend::fuzzing::read_alertmanager(data, rules) else {
        return;
    };
    let v: serde_json::Value = serde_json::from_slice(data).expect("taken but not JSON");
    assert!(v.is_object());
    for a in &alerts {
        for &i in &a.matched {
            let r = &rules[i];
            assert_eq!(a.labels.get("alertname"), Some(&r.alertname));
            for (k, want) in &r.labels {
                assert_eq!(a.labels.get(k), Some(want));
            }
        }
    }
    // The occurrence: its fingerprint (else its labels) and start.
    let occurrence = |a: &mend::fuzzing::ReadAlert| {
        let id = match a.fingerprint.is_empty() {
            true => Err(a.labels.clone()),
            false => Ok(a.fingerprint.clone()),
        };
        (id, a.starts_at.clone())
    };
    for (i, a) in alerts.iter().enumerate() {
        for b in &alerts[i + 1..] {
            if occurrence(a) != occurrence(b) {
                assert_ne!(a.key, b.key, "two occurrences share a dedup key");
            }
        }
    }
});
