//! Write mend plugins in plain Rust.
//!
//! A plugin is a type that implements [`Plugin`] plus [`Detector`], [`Action`]
//! or both, registered with [`export!`]. Build it with
//! `cargo build --target wasm32-wasip2 --release` and the `.wasm` in
//! `target/wasm32-wasip2/release/` is a component mend can load.
//!
//! ```ignore
//! use mend_sdk::{Context, Detector, Finding, Plugin, Result};
//!
//! struct Hello;
//! impl Plugin for Hello {}
//! impl Detector for Hello {
//!     type Config = mend_sdk::NoConfig;
//!     fn detect(_cx: &Context, _config: Self::Config) -> Result<Vec<Finding>> {
//!         Ok(vec![Finding::ok("hello.ok", "all good")])
//!     }
//! }
//! mend_sdk::export!(Hello: Detector);
//! ```
//!
//! The generated WIT bindings are private; everything a plugin needs is
//! re-exported here with plain Rust types.

// The generated bindings name this crate by its public name.
extern crate self as mend_sdk;

mod bindings;
mod config;
mod error;
mod finding;
pub mod host;
pub mod http;
mod manifest;
mod outcome;
mod values;

pub use config::NoConfig;
pub use error::{Error, Result};
pub use finding::{Finding, Status};
pub use manifest::{Access, Needs};
pub use outcome::Outcome;
/// A duration written like `"30s"`, `"10m"`, `"1h 30m"` (the host's `Dur`).
pub use values::Dur as Duration;
/// A byte count: an integer, or a string with a unit (`"64MiB"`).
pub use values::{Bytes, Millis, parse_bytes, parse_duration};

/// What every plugin declares about itself. The name, version and
/// description come from the plugin's `Cargo.toml`.
pub trait Plugin {
    /// The capabilities this plugin needs. mend refuses to run it unless the
    /// operator granted at least these. A role can ask for something else
    /// ([`Detector::detect_needs`], [`Action::remedy_needs`]).
    fn needs() -> Needs {
        Needs::default()
    }
}

/// A plugin that looks at the system and reports [`Finding`]s.
pub trait Detector: Plugin {
    /// The plugin's config: the operator's TOML table, deserialized. mend
    /// checks it before the plugin ever runs (`mend check-config`), so a
    /// typo is reported with its position in `mend.toml`.
    type Config: serde::de::DeserializeOwned;

    fn detect(cx: &Context, config: Self::Config) -> Result<Vec<Finding>>;

    /// What detecting needs; by default [`Plugin::needs`].
    fn detect_needs() -> Needs {
        Self::needs()
    }

    /// What this particular config will reach (the URL it probes, the
    /// directory it reads), so mend refuses a config pointing outside its
    /// grants before the first call. Also the place to reject values serde
    /// cannot (return [`Error::BadConfig`]). Default: nothing more.
    fn config_needs(config: &Self::Config) -> Result<Needs> {
        let _ = config;
        Ok(Needs::default())
    }
}

/// A plugin that repairs something.
pub trait Action: Plugin {
    /// The plugin's config, checked before the plugin runs like
    /// [`Detector::Config`].
    type Config: serde::de::DeserializeOwned;

    /// Repair what `findings` describe. With `dry_run`, change nothing and
    /// return the steps that would be taken (the host refuses writes in a
    /// dry run anyway: this is the plan the operator reads).
    fn remedy(
        cx: &Context,
        config: Self::Config,
        findings: &[Finding],
        dry_run: bool,
    ) -> Result<Outcome>;

    /// What remedying needs; by default [`Plugin::needs`].
    fn remedy_needs() -> Needs {
        Self::needs()
    }

    /// What this particular config will reach; see
    /// [`Detector::config_needs`].
    fn config_needs(config: &Self::Config) -> Result<Needs> {
        let _ = config;
        Ok(Needs::default())
    }
}

/// How much an incident matters (the check's `severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

/// Which part of a policy an action call serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepRef {
    /// Step `n` (from 0) of the ladder.
    Ladder(u32),
    /// The policy's `escalate` step.
    Escalation,
}

/// Why an action is called: the incident and the step it serves.
#[derive(Debug, Clone)]
pub struct Remedy {
    /// The incident, as `mend incident ID` shows it (0 outside the engine).
    pub incident: u64,
    pub policy: String,
    /// The step's name in the policy.
    pub step: String,
    pub step_ref: StepRef,
    /// 1 the first time this step runs for this incident.
    pub attempt: u32,
    pub severity: Severity,
    pub dry_run: bool,
    /// For the escalation step: how the incident got here, oldest first
    /// (the diagnosis, each attempt, each decision).
    pub trail: Vec<String>,
    /// For the escalation step: the incident in mend's dashboard.
    pub link: Option<String>,
}

/// Facts about the current call.
#[derive(Debug, Clone)]
pub struct Context {
    check: String,
    labels: Vec<(String, String)>,
    remedy: Option<Remedy>,
}

impl Context {
    /// The check this call is for.
    pub fn check(&self) -> &str {
        &self.check
    }
    /// The check's labels from `mend.toml`.
    pub fn labels(&self) -> &[(String, String)] {
        &self.labels
    }
    /// The value of one label.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    /// For an action: the incident, policy, step and attempt it serves.
    pub fn remedy(&self) -> Option<&Remedy> {
        self.remedy.as_ref()
    }
}

/// Registers a plugin type with mend. Name the roles it implements:
///
/// ```ignore
/// mend_sdk::export!(StaleFile: Detector, Action);
/// ```
#[macro_export]
macro_rules! export {
    ($ty:ty : Detector, Action) => { $crate::export!(@impl $ty, [Detector, Action], detect_yes, remedy_yes); };
    ($ty:ty : Action, Detector) => { $crate::export!(@impl $ty, [Detector, Action], detect_yes, remedy_yes); };
    ($ty:ty : Detector) => { $crate::export!(@impl $ty, [Detector], detect_yes, remedy_no); };
    ($ty:ty : Action) => { $crate::export!(@impl $ty, [Action], detect_no, remedy_yes); };
    (@impl $ty:ty, [$($role:ident),+], $detect:ident, $remedy:ident) => {
        #[doc(hidden)]
        pub struct __MendExport;

        impl $crate::__private::MetaGuest for __MendExport {
            fn describe() -> $crate::__private::Manifest {
                $crate::__private::manifest(
                    env!("CARGO_PKG_NAME"),
                    env!("CARGO_PKG_VERSION"),
                    env!("CARGO_PKG_DESCRIPTION"),
                    vec![$($crate::export!(@needs $role $ty)),+],
                )
            }
            fn validate(role: $crate::__private::Role, config: ::std::string::String)
                -> ::core::result::Result<$crate::__private::WitNeeds, $crate::__private::PluginError> {
                match role {
                    $crate::__private::Role::Detector => $crate::export!(@validate_detector $detect $ty, config),
                    $crate::__private::Role::Action => $crate::export!(@validate_action $remedy $ty, config),
                }
            }
        }
        $crate::export!(@$detect $ty);
        $crate::export!(@$remedy $ty);
        // Exports only exist in the component; a native build of the same
        // crate (for unit tests or benchmarks) links without them.
        #[cfg(target_arch = "wasm32")]
        $crate::__private::bindings::export!(__MendExport with_types_in $crate::__private::bindings);
    };
    (@needs Detector $ty:ty) => {
        $crate::__private::role_needs($crate::__private::Role::Detector, <$ty as $crate::Detector>::detect_needs())
    };
    (@needs Action $ty:ty) => {
        $crate::__private::role_needs($crate::__private::Role::Action, <$ty as $crate::Action>::remedy_needs())
    };
    (@validate_detector detect_yes $ty:ty, $config:ident) => {
        $crate::__private::validate_detector::<$ty>(&$config)
    };
    (@validate_detector detect_no $ty:ty, $config:ident) => {
        ::core::result::Result::Err($crate::__private::not_a(env!("CARGO_PKG_NAME"), "detector"))
    };
    (@validate_action remedy_yes $ty:ty, $config:ident) => {
        $crate::__private::validate_action::<$ty>(&$config)
    };
    (@validate_action remedy_no $ty:ty, $config:ident) => {
        ::core::result::Result::Err($crate::__private::not_a(env!("CARGO_PKG_NAME"), "action"))
    };
    (@detect_yes $ty:ty) => {
        impl $crate::__private::DetectionGuest for __MendExport {
            fn detect(input: $crate::__private::Invocation)
                -> ::core::result::Result<::std::vec::Vec<$crate::__private::WitFinding>, $crate::__private::PluginError> {
                $crate::__private::detect::<$ty>(input)
            }
        }
    };
    (@detect_no $ty:ty) => {
        impl $crate::__private::DetectionGuest for __MendExport {
            fn detect(_: $crate::__private::Invocation)
                -> ::core::result::Result<::std::vec::Vec<$crate::__private::WitFinding>, $crate::__private::PluginError> {
                ::core::result::Result::Err($crate::__private::not_a(env!("CARGO_PKG_NAME"), "detector"))
            }
        }
    };
    (@remedy_yes $ty:ty) => {
        impl $crate::__private::RemediationGuest for __MendExport {
            fn remedy(request: $crate::__private::RemedyRequest)
                -> ::core::result::Result<$crate::__private::WitOutcome, $crate::__private::PluginError> {
                $crate::__private::remedy::<$ty>(request)
            }
        }
    };
    (@remedy_no $ty:ty) => {
        impl $crate::__private::RemediationGuest for __MendExport {
            fn remedy(_: $crate::__private::RemedyRequest)
                -> ::core::result::Result<$crate::__private::WitOutcome, $crate::__private::PluginError> {
                ::core::result::Result::Err($crate::__private::not_a(env!("CARGO_PKG_NAME"), "action"))
            }
        }
    };
}

/// Used by [`export!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bindings::exports::mend::plugin::detection::Guest as DetectionGuest;
    pub use crate::bindings::exports::mend::plugin::meta::Guest as MetaGuest;
    pub use crate::bindings::exports::mend::plugin::remediation::Guest as RemediationGuest;
    use crate::bindings::mend::plugin::types as wit;
    pub use crate::bindings::mend::plugin::types::{
        Finding as WitFinding, Invocation, Manifest, Needs as WitNeeds, Outcome as WitOutcome,
        PluginError, RemedyRequest, Role, RoleNeeds,
    };
    pub use wit_bindgen;

    pub mod bindings {
        pub use crate::bindings::*;
    }

    use crate::{Action, Context, Detector, Error, Finding, Needs, Remedy, Severity, StepRef};

    pub fn manifest(
        name: &str,
        version: &str,
        description: &str,
        roles: Vec<RoleNeeds>,
    ) -> Manifest {
        Manifest {
            name: name.to_string(),
            version: version.to_string(),
            description: description.to_string(),
            roles,
        }
    }

    pub fn role_needs(role: Role, needs: Needs) -> RoleNeeds {
        RoleNeeds {
            role,
            needs: needs.into(),
        }
    }

    pub fn not_a(plugin: &str, role: &str) -> PluginError {
        PluginError::Failed(format!("plugin {plugin} is not a {role}"))
    }

    pub fn validate_detector<D: Detector>(config: &str) -> Result<WitNeeds, PluginError> {
        let config = crate::config::parse::<D::Config>(config)?;
        Ok(D::config_needs(&config)?.into())
    }

    pub fn validate_action<A: Action>(config: &str) -> Result<WitNeeds, PluginError> {
        let config = crate::config::parse::<A::Config>(config)?;
        Ok(A::config_needs(&config)?.into())
    }

    pub fn detect<D: Detector>(input: Invocation) -> Result<Vec<WitFinding>, PluginError> {
        let config = crate::config::parse::<D::Config>(&input.config)?;
        let cx = Context {
            check: input.check.clone(),
            labels: input.labels,
            remedy: None,
        };
        let findings = D::detect(&cx, config)?;
        Ok(findings
            .into_iter()
            .map(|f| f.into_wit(&input.check))
            .collect())
    }

    pub fn remedy<A: Action>(request: RemedyRequest) -> Result<WitOutcome, PluginError> {
        let config = crate::config::parse::<A::Config>(&request.invocation.config)?;
        let c = request.context;
        let cx = Context {
            check: request.invocation.check,
            labels: request.invocation.labels,
            remedy: Some(Remedy {
                incident: c.incident,
                policy: c.policy,
                step: c.step,
                step_ref: match c.step_ref {
                    wit::StepRef::Ladder(i) => StepRef::Ladder(i),
                    wit::StepRef::Escalation => StepRef::Escalation,
                },
                attempt: c.attempt,
                severity: match c.severity {
                    wit::Severity::Critical => Severity::Critical,
                    wit::Severity::Warning => Severity::Warning,
                    wit::Severity::Info => Severity::Info,
                },
                dry_run: c.dry_run,
                trail: c.trail,
                link: c.link,
            }),
        };
        let findings: Vec<Finding> = request.findings.into_iter().map(Finding::from).collect();
        let outcome = A::remedy(&cx, config, &findings, c.dry_run)?;
        Ok(outcome.into())
    }

    impl From<Error> for PluginError {
        fn from(e: Error) -> Self {
            match e {
                Error::BadConfig(m) => PluginError::BadConfig(m),
                Error::Denied(m) => PluginError::Denied(m),
                Error::Failed(m) => PluginError::Failed(m),
                Error::TimedOut(m) => PluginError::Failed(format!("timed out: {m}")),
                Error::Limit(m) => PluginError::Failed(format!("limit: {m}")),
            }
        }
    }
}
