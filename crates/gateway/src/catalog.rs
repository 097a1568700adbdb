//! The databases the gateway serves, and what a caller may see of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use postern_api::wire::CatalogEntry;

use crate::ca::Authority;
use crate::config::{ConfigError, DatabaseConfig};
use crate::rbac::{AccessChecker, Target};
use crate::tunnel::upstream::Upstream;

/// One database: its configuration and its connection logic.
pub struct CatalogDb {
    /// As configured.
    pub config: DatabaseConfig,
    /// How to reach and log in to it.
    pub upstream: Arc<Upstream>,
}

impl CatalogDb {
    /// What RBAC matches against.
    pub fn target(&self) -> Target<'_> {
        Target {
            name: &self.config.name,
            labels: &self.config.labels,
            aws_account_id: None,
        }
    }

    /// Kind shown to users.
    pub fn kind(&self) -> &'static str {
        "self-hosted"
    }
}

/// All databases, by name.
pub struct Catalog {
    dbs: BTreeMap<String, CatalogDb>,
}

impl Catalog {
    /// Builds the catalog from configuration.
    pub fn new(configs: &[DatabaseConfig], db_ca: Arc<Authority>) -> Result<Self, ConfigError> {
        let mut dbs = BTreeMap::new();
        for config in configs {
            let upstream = Arc::new(Upstream::new(config, db_ca.clone())?);
            dbs.insert(
                config.name.clone(),
                CatalogDb {
                    config: config.clone(),
                    upstream,
                },
            );
        }
        Ok(Catalog { dbs })
    }

    /// A database by name.
    pub fn get(&self, name: &str) -> Option<&CatalogDb> {
        self.dbs.get(name)
    }

    /// The entries a caller may see, by name.
    pub fn visible(&self, checker: &AccessChecker) -> Vec<CatalogEntry> {
        self.dbs
            .values()
            .filter_map(|db| {
                checker.catalog_entry(
                    &db.target(),
                    &db.config.description,
                    &db.config.protocol,
                    db.kind(),
                )
            })
            .collect()
    }
}
