//! The databases the gateway serves, and what a caller may see of them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use postern_api::wire::CatalogEntry;

use crate::aws::{Aws, AwsDatabase};
use crate::ca::Authority;
use crate::config::{ConfigError, DatabaseConfig, DatabaseKindConfig};
use crate::names::DatabaseName;
use crate::rbac::{AccessChecker, Target};
use crate::upstream::{Connector, Kind, TcpTls, Upstream};

/// One database: its configuration and its connection logic.
pub struct CatalogDb {
    /// As configured.
    pub config: DatabaseConfig,
    /// Labels roles match: the configured ones over the AWS tags (Redshift
    /// Serverless).
    pub labels: BTreeMap<String, String>,
    /// How to reach and log in to it.
    pub upstream: Arc<Upstream>,
}

impl CatalogDb {
    /// What `checker` may do here, or `None` when this database is hidden from it.
    fn entry(&self, checker: &AccessChecker) -> Option<CatalogEntry> {
        checker.catalog_entry(
            &self.target(),
            &self.config.description,
            &self.config.protocol,
            self.kind(),
        )
    }

    /// What RBAC matches against.
    pub fn target(&self) -> Target<'_> {
        Target {
            name: &self.config.name,
            labels: &self.labels,
            aws_account_id: self.upstream.kind.iam_role_account(),
        }
    }

    /// Kind shown to users: `self-hosted`, `rds-postgres` or `redshift-serverless`.
    pub fn kind(&self) -> &'static str {
        self.upstream.kind.as_str()
    }
}

/// All databases, by name.
pub struct Catalog {
    dbs: BTreeMap<String, CatalogDb>,
}

impl Catalog {
    /// Builds the catalog from configuration. AWS databases need `aws`;
    /// `login_timeout` bounds each connection and login to a database.
    pub fn new(
        configs: &[DatabaseConfig],
        db_ca: Arc<Authority>,
        aws: Option<Arc<Aws>>,
        login_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        Self::with_connector(configs, db_ca, aws, login_timeout, Arc::new(TcpTls))
    }

    /// [`Catalog::new`] whose databases are reached through `connector`
    /// instead of TCP and TLS: in-process tests hand it one that returns
    /// in-memory pipes to a scripted database (see [`crate::upstream::connector`]).
    pub fn with_connector(
        configs: &[DatabaseConfig],
        db_ca: Arc<Authority>,
        aws: Option<Arc<Aws>>,
        login_timeout: Duration,
        connector: Arc<dyn Connector>,
    ) -> Result<Self, ConfigError> {
        let mut dbs = BTreeMap::new();
        for config in configs {
            let aws = || {
                aws.clone().ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "database {:?}: AWS is not set up in the gateway",
                        config.name
                    ))
                })
            };
            let kind = match &config.kind {
                DatabaseKindConfig::SelfHosted(_) => Kind::SelfHosted,
                DatabaseKindConfig::RdsPostgres(rds) => {
                    Kind::Rds(Arc::new(AwsDatabase::rds(config, rds, aws()?)?))
                }
                DatabaseKindConfig::RedshiftServerless(rs) => Kind::RedshiftServerless(Arc::new(
                    AwsDatabase::redshift_serverless(config, rs, aws()?)?,
                )),
            };
            let upstream = Arc::new(Upstream::new(
                config,
                kind,
                db_ca.clone(),
                connector.clone(),
                login_timeout,
            )?);
            dbs.insert(
                config.name.clone(),
                CatalogDb {
                    config: config.clone(),
                    labels: config.labels.clone(),
                    upstream,
                },
            );
        }
        Ok(Catalog { dbs })
    }

    /// Asks AWS for what the configuration leaves out: each Redshift
    /// Serverless workgroup's endpoint (when there is no `uri`) and its tags,
    /// which become labels under the configured ones. A failure is logged
    /// and the database stays: its endpoint is asked for again at the first
    /// connection, its tags at the next start.
    pub async fn discover_aws(&mut self) {
        let mut lookups = tokio::task::JoinSet::new();
        for db in self.dbs.values() {
            let Kind::RedshiftServerless(aws) = &db.upstream.kind else {
                continue;
            };
            let aws = aws.clone();
            let name = db.config.name.clone();
            lookups.spawn(async move { (name, aws.discover().await) });
        }
        while let Some(joined) = lookups.join_next().await {
            let Ok((name, result)) = joined else {
                continue;
            };
            let Some(db) = self.dbs.get_mut(&name) else {
                continue;
            };
            match result {
                Ok((info, tags)) => {
                    if !db.upstream.has_endpoint()
                        && let Err(e) = db.upstream.set_endpoint(&info.address, info.port)
                    {
                        tracing::warn!(database = %name, error = %e, "unusable workgroup endpoint");
                    }
                    let count = tags.len();
                    let mut labels = tags;
                    labels.extend(db.config.labels.clone());
                    db.labels = labels;
                    tracing::info!(database = %name, endpoint = %db.upstream.server_addr(), tags = count, "Redshift Serverless workgroup found");
                }
                Err(error) => {
                    tracing::warn!(
                        database = %name,
                        %error,
                        "could not read the Redshift Serverless workgroup (GetWorkgroup, ListTagsForResource): \
                         its AWS tags are not labels until the gateway restarts, and its endpoint is asked for again at the first connection"
                    );
                }
            }
        }
    }

    /// A database by name.
    pub fn get(&self, name: &str) -> Option<&CatalogDb> {
        self.dbs.get(name)
    }

    /// The databases' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.dbs.keys().map(String::as_str)
    }

    /// The entries a caller may see, by name.
    pub fn visible(&self, checker: &AccessChecker) -> Vec<CatalogEntry> {
        self.dbs
            .values()
            .filter_map(|db| db.entry(checker))
            .collect()
    }

    /// A database the caller may see in [`Catalog::visible`]; `None` both
    /// for one that does not exist and for one the caller's roles hide, so
    /// the two cannot be told apart.
    pub fn reachable(&self, name: &DatabaseName, checker: &AccessChecker) -> Option<&CatalogDb> {
        self.get(name.as_str())
            .filter(|db| db.entry(checker).is_some())
    }
}
