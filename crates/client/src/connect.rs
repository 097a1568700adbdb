//! Turning "connect me to database X" into a tunnel spec, with the catalog's
//! defaults filled in and mistakes caught before any port is opened.

use postern_api::wire::CatalogEntry;

use crate::api::GatewayClient;
use crate::error::ClientError;
use crate::session::ActiveSession;
use crate::tunnel::TunnelSpec;

/// What the user asked for.
#[derive(Clone, Debug, Default)]
pub struct ConnectRequest {
    /// Catalog database.
    pub database: String,
    /// `--db-user`.
    pub db_user: Option<String>,
    /// `--db-name`.
    pub db_name: Option<String>,
    /// `--db-roles`.
    pub db_roles: Vec<String>,
}

/// Looks the database up and fills in defaults: with auto-provisioning the db
/// user is the Postern username; otherwise the only allowed value, if there
/// is exactly one. Returns the spec and the catalog entry.
pub async fn prepare(
    session: &ActiveSession,
    req: ConnectRequest,
) -> Result<(TunnelSpec, CatalogEntry), ClientError> {
    let catalog = GatewayClient::for_session(session)?.databases().await?;
    let entry = catalog
        .databases
        .into_iter()
        .find(|d| d.name == req.database)
        .ok_or_else(|| ClientError::UnknownDatabase(req.database.clone()))?;
    let spec = spec_for(&entry, &session.identity.username, req)?;
    Ok((spec, entry))
}

fn spec_for(
    entry: &CatalogEntry,
    username: &str,
    req: ConnectRequest,
) -> Result<TunnelSpec, ClientError> {
    let auto = entry.auto_user_mode != "off";
    let db_user = match req.db_user {
        Some(u) if auto && u != username => {
            return Err(ClientError::AutoDbUser {
                database: entry.name.clone(),
                username: username.to_owned(),
            });
        }
        Some(u) => {
            let allowed = &entry.db_users;
            let same = |a: &String| same_db_user(&entry.kind, a, &u);
            let ok = allowed.allowed.iter().any(same)
                || (allowed.wildcard && !allowed.denied.iter().any(same));
            if !ok {
                return Err(ClientError::DbUserNotAllowed {
                    db_user: u,
                    database: entry.name.clone(),
                    allowed: allowed.describe(),
                });
            }
            Some(u)
        }
        None if auto => Some(username.to_owned()),
        None => entry.db_users.only_value().map(str::to_owned),
    };
    let db_name = req
        .db_name
        .or_else(|| entry.db_names.only_value().map(str::to_owned));
    Ok(TunnelSpec {
        database: entry.name.clone(),
        db_user,
        db_name,
        db_roles: req.db_roles,
    })
}

/// Whether two db users are the same. On Redshift Serverless the db user
/// is an IAM role, written by name or by ARN (`arn:aws:iam::ACCOUNT:role/[PATH/]NAME`);
/// the gateway decides on the account, this only spares a useless tunnel.
fn same_db_user(kind: &str, a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if kind != "redshift-serverless" {
        return false;
    }
    let role = |value: &str| -> Option<(Option<String>, String)> {
        let Some(rest) = value.strip_prefix("arn:") else {
            return Some((None, value.to_owned()));
        };
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [_partition, "iam", "", account, resource] = parts.as_slice() else {
            return None;
        };
        let name = resource.strip_prefix("role/")?.rsplit('/').next()?;
        Some((Some((*account).to_owned()), name.to_owned()))
    };
    match (role(a), role(b)) {
        (Some((account_a, name_a)), Some((account_b, name_b))) => {
            name_a == name_b
                && match (account_a, account_b) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                }
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_api::wire::AllowedValues;

    fn entry(users: AllowedValues, mode: &str) -> CatalogEntry {
        CatalogEntry {
            name: "pg".into(),
            description: String::new(),
            protocol: "postgres".into(),
            kind: "self-hosted".into(),
            labels: Default::default(),
            db_users: users,
            db_names: AllowedValues {
                allowed: vec!["app".into()],
                ..Default::default()
            },
            db_roles: vec![],
            auto_user_mode: mode.into(),
            limits: Default::default(),
        }
    }

    fn req(db_user: Option<&str>) -> ConnectRequest {
        ConnectRequest {
            database: "pg".into(),
            db_user: db_user.map(str::to_owned),
            ..Default::default()
        }
    }

    #[test]
    fn single_allowed_values_become_defaults() {
        let e = entry(
            AllowedValues {
                allowed: vec!["reader".into()],
                ..Default::default()
            },
            "off",
        );
        let spec = spec_for(&e, "alice", req(None)).unwrap();
        assert_eq!(spec.db_user.as_deref(), Some("reader"));
        assert_eq!(spec.db_name.as_deref(), Some("app"));
    }

    #[test]
    fn denied_user_is_refused_before_connecting() {
        let e = entry(
            AllowedValues {
                allowed: vec![],
                wildcard: true,
                denied: vec!["postgres".into()],
            },
            "off",
        );
        let err = spec_for(&e, "alice", req(Some("postgres")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not allowed") && err.contains("except [postgres]"),
            "{err}"
        );
        assert_eq!(spec_for(&e, "alice", req(None)).unwrap().db_user, None);
    }

    #[test]
    fn auto_provisioning_uses_the_username() {
        let e = entry(AllowedValues::default(), "keep");
        assert_eq!(
            spec_for(&e, "alice", req(None)).unwrap().db_user.as_deref(),
            Some("alice")
        );
        assert!(spec_for(&e, "alice", req(Some("bob"))).is_err());
    }

    #[test]
    fn iam_roles_match_by_name_or_arn_on_redshift_serverless() {
        let arn = "arn:aws:iam::123456789012:role/team/analyst";
        assert!(same_db_user("redshift-serverless", "analyst", arn));
        assert!(same_db_user("redshift-serverless", arn, "analyst"));
        assert!(same_db_user(
            "redshift-serverless",
            "arn:aws:iam::123456789012:role/analyst",
            arn
        ));
        assert!(!same_db_user(
            "redshift-serverless",
            "arn:aws:iam::999999999999:role/analyst",
            arn
        ));
        assert!(!same_db_user("self-hosted", "analyst", arn));
        assert!(!same_db_user("redshift-serverless", "analyst2", arn));
    }
}
