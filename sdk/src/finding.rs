//! Findings: what a detector saw.

use crate::bindings::mend::plugin::types as wit;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    Warn,
    Fail,
    Unknown,
}

/// One observation. Build it with [`Finding::ok`], [`Finding::warn`],
/// [`Finding::fail`] or [`Finding::unknown`], then add metrics and labels.
///
/// ```ignore
/// Finding::fail("file.stale", "status.json is 42m old")
///     .metric("age_seconds", 2520.0)
///     .label("path", "/data/status.json");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// The check it belongs to; empty means "the check being run".
    pub check: String,
    /// A stable, dotted code such as `file.stale`.
    pub code: String,
    pub status: Status,
    pub summary: String,
    pub metrics: Vec<(String, f64)>,
    pub labels: Vec<(String, String)>,
}

impl Finding {
    pub fn new(status: Status, code: impl Into<String>, summary: impl Into<String>) -> Self {
        Finding {
            check: String::new(),
            code: code.into(),
            status,
            summary: summary.into(),
            metrics: Vec::new(),
            labels: Vec::new(),
        }
    }
    pub fn ok(code: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Status::Ok, code, summary)
    }
    pub fn warn(code: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Status::Warn, code, summary)
    }
    pub fn fail(code: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Status::Fail, code, summary)
    }
    pub fn unknown(code: impl Into<String>, summary: impl Into<String>) -> Self {
        Self::new(Status::Unknown, code, summary)
    }
    pub fn metric(mut self, name: impl Into<String>, value: f64) -> Self {
        self.metrics.push((name.into(), value));
        self
    }
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((key.into(), value.into()));
        self
    }
    /// The value of a metric, if present.
    pub fn get_metric(&self, name: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }
    /// The value of a label, if present.
    pub fn get_label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn into_wit(self, check: &str) -> wit::Finding {
        wit::Finding {
            check: if self.check.is_empty() {
                check.to_string()
            } else {
                self.check
            },
            code: self.code,
            status: match self.status {
                Status::Ok => wit::Status::Ok,
                Status::Warn => wit::Status::Warn,
                Status::Fail => wit::Status::Fail,
                Status::Unknown => wit::Status::Unknown,
            },
            summary: self.summary,
            metrics: self.metrics,
            labels: self.labels,
        }
    }
}

impl From<wit::Finding> for Finding {
    fn from(f: wit::Finding) -> Self {
        Finding {
            check: f.check,
            code: f.code,
            status: match f.status {
                wit::Status::Ok => Status::Ok,
                wit::Status::Warn => Status::Warn,
                wit::Status::Fail => Status::Fail,
                wit::Status::Unknown => Status::Unknown,
            },
            summary: f.summary,
            metrics: f.metrics,
            labels: f.labels,
        }
    }
}
