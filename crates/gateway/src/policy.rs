//! The roles and databases in force, and their reload.
//!
//! The gateway reads its role files and builds its database catalog at
//! start; `SIGHUP` (see [`crate::cmd`]) reads them again from the
//! configuration file. A new [`Policy`] is built completely and checked
//! before it replaces the old one, so a reload with a mistake in it
//! changes nothing. Every API call and tunnel connection takes the policy
//! in force once, when it starts: a live session keeps the policy it was
//! authorized under (locks, not reloads, end sessions), and the next
//! connection sees the new one.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::aws::{Aws, AwsIdentity};
use crate::ca::Authority;
use crate::catalog::Catalog;
use crate::config::{ConfigError, ConnectorConfig, GatewayConfig};
use crate::rbac::{RbacError, RoleSet};

/// Why a policy could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// A role file is wrong or unreadable.
    #[error(transparent)]
    Roles(#[from] RbacError),
    /// A database entry or a connector's mapping is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Roles and databases, as one configuration file gave them.
pub struct Policy {
    /// Roles.
    pub roles: RoleSet,
    /// Databases.
    pub catalog: Catalog,
}

/// What a policy is built with, beside the configuration: fixed for the
/// process.
pub struct PolicySources {
    /// Signs the certificates the gateway logs in to databases with.
    pub db_ca: Arc<Authority>,
    /// The AWS client of the gateway's start, if its databases needed one.
    pub aws: Option<Arc<Aws>>,
    /// Where AWS credentials come from, for a reload that adds the first
    /// AWS database.
    pub aws_identity: AwsIdentity,
}

impl PolicySources {
    /// Sets up what `config`'s databases need: the AWS SDK only when one
    /// of them is an AWS database, in the first one's region (the region
    /// of the credential chain's own STS calls).
    pub async fn new(
        config: &GatewayConfig,
        db_ca: Arc<Authority>,
        aws_identity: AwsIdentity,
    ) -> Self {
        let mut sources = PolicySources {
            db_ca,
            aws: None,
            aws_identity,
        };
        sources.aws = sources.aws_for(config).await;
        sources
    }

    async fn aws_for(&self, config: &GatewayConfig) -> Option<Arc<Aws>> {
        let region = config.databases.iter().find_map(|db| db.aws_region())?;
        if let Some(aws) = &self.aws {
            return Some(aws.clone());
        }
        Some(Arc::new(
            Aws::load(
                self.aws_identity.clone(),
                &region,
                config.limits.upstream_timeout,
            )
            .await,
        ))
    }

    /// Reads `config`'s role files and builds its catalog (asking AWS for
    /// the tags of Redshift Serverless workgroups), and checks that the
    /// `connectors` in force map claims only to roles the files define.
    pub async fn load(
        &self,
        config: &GatewayConfig,
        connectors: &[ConnectorConfig],
    ) -> Result<Policy, PolicyError> {
        let roles = RoleSet::load_paths(&config.roles)?;
        check_mapped_roles(connectors, &roles)?;
        let mut catalog = Catalog::new(
            &config.databases,
            self.db_ca.clone(),
            self.aws_for(config).await,
            config.limits.upstream_timeout,
        )?;
        catalog.discover_aws().await;
        Ok(Policy { roles, catalog })
    }
}

/// Checks that every role a connector's `claims_to_roles` grants is
/// defined, so a typo is found at start or reload, not at someone's login.
fn check_mapped_roles(connectors: &[ConnectorConfig], roles: &RoleSet) -> Result<(), ConfigError> {
    for ConnectorConfig::Oidc(oidc) in connectors {
        if let Some(problem) = oidc.unknown_roles(roles).into_iter().next() {
            return Err(ConfigError::Invalid(problem.message));
        }
    }
    Ok(())
}

/// The policy in force, shared by the API and the tunnels.
#[derive(Clone)]
pub struct LivePolicy(Arc<ArcSwap<Policy>>);

impl LivePolicy {
    /// Puts `policy` in force.
    pub fn new(policy: Policy) -> Self {
        LivePolicy(Arc::new(ArcSwap::from_pointee(policy)))
    }

    /// The policy in force now; hold it for as long as one request or
    /// session needs a consistent view.
    pub fn current(&self) -> Arc<Policy> {
        self.0.load_full()
    }

    /// Puts `policy` in force for everything that starts from now on.
    pub fn replace(&self, policy: Policy) {
        self.0.store(Arc::new(policy));
    }
}
