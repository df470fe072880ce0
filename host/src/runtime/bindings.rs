//! Host bindings for each supported version of the WIT contract, and their
//! conversions into [`crate::contract`] types. A new incompatible version of
//! `mend:plugin` gets its own module here; old ones stay so old plugins keep
//! loading.

/// `mend:plugin@0.1.0`.
pub mod v0_1 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "plugin",
        exports: { default: async },
        imports: {
            "mend:plugin/exec.run": async,
            "mend:plugin/sql.query": async,
            "mend:plugin/sql.execute": async,
            "mend:plugin/redis.command": async,
            "mend:plugin/redis.scan": async,
        },
    });

    pub use self::exports::mend::plugin::{detection, meta, remediation};
    pub use self::mend::plugin::types;

    use crate::contract as c;

    /// The versions of `mend:plugin` these bindings serve (semver-compatible).
    pub const VERSION: &str = "0.1";

    impl From<types::Status> for c::Status {
        fn from(s: types::Status) -> Self {
            match s {
                types::Status::Ok => c::Status::Ok,
                types::Status::Warn => c::Status::Warn,
                types::Status::Fail => c::Status::Fail,
                types::Status::Unknown => c::Status::Unknown,
            }
        }
    }

    impl From<c::Status> for types::Status {
        fn from(s: c::Status) -> Self {
            match s {
                c::Status::Ok => types::Status::Ok,
                c::Status::Warn => types::Status::Warn,
                c::Status::Fail => types::Status::Fail,
                c::Status::Unknown => types::Status::Unknown,
            }
        }
    }

    impl From<types::Finding> for c::Finding {
        fn from(f: types::Finding) -> Self {
            c::Finding {
                check: f.check,
                code: f.code,
                status: f.status.into(),
                summary: f.summary,
                metrics: f.metrics.into_iter().collect(),
                labels: f.labels.into_iter().collect(),
            }
        }
    }

    impl From<&c::Finding> for types::Finding {
        fn from(f: &c::Finding) -> Self {
            types::Finding {
                check: f.check.clone(),
                code: f.code.clone(),
                status: f.status.into(),
                summary: f.summary.clone(),
                metrics: f.metrics.iter().map(|(k, v)| (k.clone(), *v)).collect(),
                labels: f
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            }
        }
    }

    impl From<types::Outcome> for c::Outcome {
        fn from(o: types::Outcome) -> Self {
            c::Outcome {
                changed: o.changed,
                steps: o.steps,
                message: o.message,
            }
        }
    }

    impl From<types::Needs> for c::Needs {
        fn from(n: types::Needs) -> Self {
            c::Needs {
                dirs: n
                    .dirs
                    .into_iter()
                    .map(|d| c::DirNeed {
                        path: d.path,
                        write: d.write,
                    })
                    .collect(),
                addresses: n.addresses,
                urls: n.urls,
                connections: n.connections,
                commands: n.commands,
                state: n.state,
            }
        }
    }

    impl From<types::Manifest> for c::Manifest {
        fn from(m: types::Manifest) -> Self {
            c::Manifest {
                name: m.name,
                version: m.version,
                description: m.description,
                roles: m
                    .roles
                    .into_iter()
                    .map(|r| c::RoleNeeds {
                        role: match r.role {
                            types::Role::Detector => c::Role::Detector,
                            types::Role::Action => c::Role::Action,
                        },
                        needs: r.needs.into(),
                    })
                    .collect(),
            }
        }
    }
}
