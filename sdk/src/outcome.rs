//! Outcomes: what an action did, or in dry-run would do.

use crate::bindings::mend::plugin::types as wit;

/// ```ignore
/// let mut out = Outcome::new();
/// out.step("deleted /data/old.log (12 MB)");
/// Ok(out.changed().message("freed 12 MB"))
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub changed: bool,
    pub steps: Vec<String>,
    pub message: String,
}

impl Outcome {
    pub fn new() -> Self {
        Self::default()
    }
    /// Records one step, taken or (in dry-run) planned.
    pub fn step(&mut self, step: impl Into<String>) -> &mut Self {
        self.steps.push(step.into());
        self
    }
    /// Marks that something on the system changed.
    pub fn changed(mut self) -> Self {
        self.changed = true;
        self
    }
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }
}

impl From<Outcome> for wit::Outcome {
    fn from(o: Outcome) -> Self {
        wit::Outcome {
            changed: o.changed,
            steps: o.steps,
            message: o.message,
        }
    }
}
