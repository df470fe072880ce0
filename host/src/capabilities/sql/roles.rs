//! What a role can do that a read-only transaction does not stop.
//!
//! `read_only = true` runs every statement in a read-only transaction.
//! That stops writes to tables, but not a superuser, nor a member of the
//! predefined roles that reach the server's operating system:
//! `COPY ... TO PROGRAM` runs a shell command, `pg_read_file` and
//! `COPY ... FROM` read any file the server can, `COPY ... TO` writes one,
//! and `dblink_exec` opens a second, writable session. A read-only
//! connection whose role holds any of these is refused.

use tokio_postgres::{Client, SimpleQueryMessage};

/// Roles whose members reach the server's files or programs.
pub const SERVER_ACCESS_ROLES: [&str; 3] = [
    "pg_execute_server_program",
    "pg_read_server_files",
    "pg_write_server_files",
];

/// One thing a role can do past a read-only transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleRisk {
    /// The role is a superuser.
    Superuser,
    /// The role is a member of superuser role `role` (and may `SET ROLE`
    /// to it).
    SuperuserMember { role: String },
    /// The role is a member of one of [`SERVER_ACCESS_ROLES`].
    ServerAccess { role: String },
}

impl std::fmt::Display for RoleRisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoleRisk::Superuser => write!(f, "is a superuser"),
            RoleRisk::SuperuserMember { role } => {
                write!(f, "is a member of the superuser role `{role}`")
            }
            RoleRisk::ServerAccess { role } => write!(f, "is a member of `{role}`"),
        }
    }
}

/// The login role of a connection and what it can do past a read-only
/// transaction (nothing, for a role fit for `read_only = true`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRisks {
    /// The session's login role (`session_user`).
    pub role: String,
    pub risks: Vec<RoleRisk>,
}

impl RoleRisks {
    pub fn is_empty(&self) -> bool {
        self.risks.is_empty()
    }

    /// Why `read_only = true` cannot be kept on connection `connection`,
    /// for the operator (e.g. from `check-config`); `None` when it can.
    pub fn refusal(&self, connection: &str) -> Option<String> {
        self.explain()
            .map(|why| format!("connection `{connection}`: {why}"))
    }

    /// [`RoleRisks::refusal`] without the connection's name.
    pub fn explain(&self) -> Option<String> {
        if self.risks.is_empty() {
            return None;
        }
        let what: Vec<String> = self.risks.iter().map(|r| r.to_string()).collect();
        Some(format!(
            "read_only = true cannot be kept: role `{}` {}, so it can run programs or read \
             and write files on the database server in a read-only transaction \
             (COPY ... TO PROGRAM, pg_read_file, ...); connect as a role that is neither a \
             superuser nor a member of {}",
            self.role,
            what.join(" and "),
            SERVER_ACCESS_ROLES.join(", ")
        ))
    }

    /// Asks the server about the session's login role, in one round
    /// trip. A member of a role counts whether or not it inherits it: it
    /// may `SET ROLE` to it.
    pub(crate) async fn query(client: &Client) -> Result<RoleRisks, tokio_postgres::Error> {
        let sql = format!(
            "SELECT s.u, r.rolname::text, r.rolsuper \
             FROM (SELECT session_user::text AS u) s \
             LEFT JOIN pg_catalog.pg_roles r \
               ON (r.rolsuper OR r.rolname IN ('{}')) \
              AND pg_catalog.pg_has_role(session_user, r.oid, 'MEMBER') \
             ORDER BY r.rolname",
            SERVER_ACCESS_ROLES.join("', '")
        );
        let (mut role, mut superusers, mut access) = (String::new(), Vec::new(), Vec::new());
        for m in client.simple_query(&sql).await? {
            let SimpleQueryMessage::Row(row) = m else {
                continue;
            };
            role = row.get(0).unwrap_or_default().to_string();
            match (row.get(1), row.get(2)) {
                // Booleans come as `t` and `f` in the text format.
                (Some(name), Some("t")) => superusers.push(name.to_string()),
                (Some(name), Some(_)) => access.push(name.to_string()),
                _ => {}
            }
        }
        Ok(RoleRisks::from_memberships(role, superusers, access))
    }

    fn from_memberships(role: String, superusers: Vec<String>, access: Vec<String>) -> RoleRisks {
        let risks = if superusers.contains(&role) {
            // A superuser is a member of every role: say it once.
            vec![RoleRisk::Superuser]
        } else {
            superusers
                .into_iter()
                .map(|role| RoleRisk::SuperuserMember { role })
                .chain(
                    access
                        .into_iter()
                        .map(|role| RoleRisk::ServerAccess { role }),
                )
                .collect()
        };
        RoleRisks { role, risks }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn a_superuser_is_named_once_and_members_by_role() {
        let su = RoleRisks::from_memberships(
            "postgres".into(),
            s(&["postgres"]),
            s(&SERVER_ACCESS_ROLES),
        );
        assert_eq!(su.risks, vec![RoleRisk::Superuser]);
        let why = su.refusal("ro").unwrap();
        assert!(why.contains("connection `ro`"), "{why}");
        assert!(why.contains("role `postgres` is a superuser"), "{why}");

        let member =
            RoleRisks::from_memberships("app".into(), s(&["admin"]), s(&["pg_read_server_files"]));
        assert_eq!(
            member.risks,
            vec![
                RoleRisk::SuperuserMember {
                    role: "admin".into()
                },
                RoleRisk::ServerAccess {
                    role: "pg_read_server_files".into()
                },
            ]
        );
        let why = member.refusal("ro").unwrap();
        assert!(why.contains("superuser role `admin`"), "{why}");
        assert!(why.contains("`pg_read_server_files`"), "{why}");

        let fine = RoleRisks::from_memberships("reader".into(), vec![], vec![]);
        assert!(fine.is_empty());
        assert_eq!(fine.refusal("ro"), None);
    }
}
