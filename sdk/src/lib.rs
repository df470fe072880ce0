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

pub use config::{Bytes, Duration, NoConfig};
pub use error::{Error, Result};
pub use finding::{Finding, Status};
pub use manifest::{Access, Needs};
pub use outcome::Outcome;

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
    /// The plugin's config: the operator's TOML table, deserialized.
    type Config: serde::de::DeserializeOwned;

    fn detect(cx: &Context, config: Self::Config) -> Result<Vec<Finding>>;

    /// What detecting needs; by default [`Plugin::needs`].
    fn detect_needs() -> Needs {
        Self::needs()
    }
}

/// A plugin that repairs something.
pub trait Action: Plugin {
    type Config: serde::de::DeserializeOwned;

    /// Repair what `findings` describe. With `dry_run`, change nothing and
    /// return the steps that would be taken.
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
}

/// Facts about the current call.
#[derive(Debug, Clone)]
pub struct Context {
    check: String,
}

impl Context {
    /// The check (or policy step) this call is for.
    pub fn check(&self) -> &str {
        &self.check
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
            fn remedy(request: $crate::__private::RemedyRequest, dry_run: bool)
                -> ::core::result::Result<$crate::__private::WitOutcome, $crate::__private::PluginError> {
                $crate::__private::remedy::<$ty>(request, dry_run)
            }
        }
    };
    (@remedy_no $ty:ty) => {
        impl $crate::__private::RemediationGuest for __MendExport {
            fn remedy(_: $crate::__private::RemedyRequest, _: bool)
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
    pub use crate::bindings::mend::plugin::types::{
        Finding as WitFinding, Invocation, Manifest, Outcome as WitOutcome, PluginError,
        RemedyRequest, Role, RoleNeeds,
    };
    pub use wit_bindgen;

    pub mod bindings {
        pub use crate::bindings::*;
    }

    use crate::{Action, Context, Detector, Error, Finding, Needs};

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

    pub fn detect<D: Detector>(input: Invocation) -> Result<Vec<WitFinding>, PluginError> {
        let config = crate::config::parse::<D::Config>(&input.config)?;
        let cx = Context {
            check: input.check.clone(),
        };
        let findings = D::detect(&cx, config)?;
        Ok(findings
            .into_iter()
            .map(|f| f.into_wit(&input.check))
            .collect())
    }

    pub fn remedy<A: Action>(
        request: RemedyRequest,
        dry_run: bool,
    ) -> Result<WitOutcome, PluginError> {
        let config = crate::config::parse::<A::Config>(&request.invocation.config)?;
        let cx = Context {
            check: request.invocation.check,
        };
        let findings: Vec<Finding> = request.findings.into_iter().map(Finding::from).collect();
        let outcome = A::remedy(&cx, config, &findings, dry_run)?;
        Ok(outcome.into())
    }

    impl From<Error> for PluginError {
        fn from(e: Error) -> Self {
            match e {
                Error::BadConfig(m) => PluginError::BadConfig(m),
                Error::Denied(m) => PluginError::Denied(m),
                Error::Failed(m) => PluginError::Failed(m),
            }
        }
    }
}
