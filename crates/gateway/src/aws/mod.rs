//! AWS-hosted databases (DESIGN.md §4): Amazon RDS for PostgreSQL (an IAM
//! authentication token is the password) and Amazon Redshift Serverless (the
//! db user is an IAM role; the gateway assumes it and fetches temporary
//! database credentials for `IAMR:<role>`).
//!
//! [`Aws`] is the gateway's own AWS identity, from the standard credential
//! chain (environment, shared files and profile, web identity, container and
//! instance metadata with IMDSv2), shared by all databases. Each AWS database
//! gets an [`AwsDatabase`]: its region, account, optional first role
//! (`assume_role_arn` with `external_id`), endpoint overrides and caches.
//! What the tunnel needs from it is one password (and, for Redshift, the
//! user) per connection; see `upstream::LoginCredentials`.

pub mod errors;
pub mod rds;
mod redshift;
mod sts;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, future};
use aws_sdk_sts::error::DisplayErrorContext;

use crate::config::{
    ConfigError, DatabaseConfig, RdsPostgresConfig, RedshiftServerlessDbConfig, is_role_arn,
};
pub use errors::AwsError;
use redshift::Workgroup;
pub(crate) use redshift::{DbCredentials, WorkgroupInfo};
use sts::{FirstHop, RoleChain};

/// Where the gateway's own AWS credentials come from.
#[derive(Clone, Default)]
pub enum AwsIdentity {
    /// The standard chain: environment, shared credentials and config files
    /// (`AWS_PROFILE`), web identity (EKS IRSA), container credentials, and
    /// EC2 instance metadata (IMDSv2).
    #[default]
    DefaultChain,
    /// Fixed keys, for tests against local stand-ins.
    Static {
        /// Access key ID.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
    },
    /// No credentials at all, as on a host where the chain finds nothing
    /// (tests of that error without touching instance metadata).
    Nothing,
}

impl std::fmt::Debug for AwsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AwsIdentity::DefaultChain => f.write_str("DefaultChain"),
            AwsIdentity::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"** redacted **")
                .finish(),
            AwsIdentity::Nothing => f.write_str("Nothing"),
        }
    }
}

/// A provider that never has credentials.
#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no providers in chain provided credentials",
        )))
    }
}

/// The gateway's own AWS identity and SDK settings, shared by all databases.
pub struct Aws {
    sdk: SdkConfig,
    own: Mutex<Option<(Credentials, SystemTime)>>,
}

impl Aws {
    /// Sets up the SDK: the credential chain (resolved lazily, on first
    /// use), `timeout` for connecting and for each AWS call, two attempts per
    /// call. `region` is the region of the chain's own STS calls (web
    /// identity, profiles that assume roles).
    pub async fn load(identity: AwsIdentity, region: &str, timeout: Duration) -> Aws {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(timeout)
            .operation_attempt_timeout(timeout)
            .operation_timeout(timeout)
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_owned()))
            .timeout_config(timeouts)
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2));
        loader = match identity {
            AwsIdentity::DefaultChain => loader,
            AwsIdentity::Static {
                access_key_id,
                secret_access_key,
            } => loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "postern-static",
            )),
            AwsIdentity::Nothing => loader.credentials_provider(NoCredentials),
        };
        Aws {
            sdk: loader.load().await,
            own: Mutex::new(None),
        }
    }

    /// The gateway's own credentials, cached until shortly before they expire.
    pub(crate) async fn own_credentials(&self) -> Result<Credentials, AwsError> {
        let now = SystemTime::now();
        if let Some((credentials, renew)) = self.own.lock().unwrap().as_ref()
            && now < *renew
        {
            return Ok(credentials.clone());
        }
        let provider = self
            .sdk
            .credentials_provider()
            .ok_or_else(|| AwsError::NoCredentials {
                detail: "no credential provider is configured".into(),
            })?;
        let credentials =
            provider
                .provide_credentials()
                .await
                .map_err(|e| AwsError::NoCredentials {
                    detail: DisplayErrorContext(&e).to_string(),
                })?;
        // Keys without an expiry (environment, files) are read again now
        // and then, so a rotation is noticed.
        let renew = match credentials.expiry() {
            Some(expires) => renew_at(now, expires),
            None => now + Duration::from_secs(300),
        };
        *self.own.lock().unwrap() = Some((credentials.clone(), renew));
        Ok(credentials)
    }
}

/// When cached credentials fetched at `fetched` that expire at `expires`
/// are renewed: a fifth of their lifetime before the end, at most five
/// minutes before.
pub(crate) fn renew_at(fetched: SystemTime, expires: SystemTime) -> SystemTime {
    let life = expires.duration_since(fetched).unwrap_or_default();
    expires - (life / 5).min(Duration::from_secs(300))
}

/// The AWS partition of a region.
pub(crate) fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else {
        "aws"
    }
}

/// Temporary Redshift credentials for one connection.
#[derive(Debug)]
pub(crate) struct RedshiftLogin {
    /// The role they belong to.
    pub role_arn: String,
    /// User and password.
    pub credentials: DbCredentials,
    /// Whether they came from the cache (and may be stale).
    pub cached: bool,
}

/// One AWS-hosted database: what the gateway needs to log in to it.
pub struct AwsDatabase {
    /// Catalog name.
    pub database: String,
    /// `rds-postgres` or `redshift-serverless`.
    pub kind: &'static str,
    region: String,
    account_id: Option<String>,
    aws: Arc<Aws>,
    chain: RoleChain,
    workgroup: Option<Workgroup>,
    rds_instance: Option<String>,
}

impl std::fmt::Debug for AwsDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsDatabase")
            .field("database", &self.database)
            .field("kind", &self.kind)
            .field("region", &self.region)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

impl AwsDatabase {
    /// Prepares a validated `rds-postgres` database.
    pub fn rds(
        config: &DatabaseConfig,
        rds: &RdsPostgresConfig,
        aws: Arc<Aws>,
    ) -> Result<Self, ConfigError> {
        let mut db = Self::prepare(config, aws)?;
        db.rds_instance = rds.aws.service.rds.instance_id.clone();
        Ok(db)
    }

    /// Prepares a validated `redshift-serverless` database.
    pub fn redshift_serverless(
        config: &DatabaseConfig,
        redshift: &RedshiftServerlessDbConfig,
        aws: Arc<Aws>,
    ) -> Result<Self, ConfigError> {
        let mut db = Self::prepare(config, aws)?;
        let account = db.account_id.as_deref().ok_or_else(|| {
            ConfigError::Invalid(format!(
                "database {:?}: aws.account_id is required",
                config.name
            ))
        })?;
        db.workgroup = Some(Workgroup::new(
            &db.aws.sdk,
            &redshift.aws.service.redshift_serverless.workgroup_name,
            &db.region,
            account,
            redshift.aws.endpoints.redshift_serverless.as_deref(),
        ));
        Ok(db)
    }

    /// What both AWS kinds share: region, account and the role chain.
    fn prepare(config: &DatabaseConfig, aws: Arc<Aws>) -> Result<Self, ConfigError> {
        let invalid =
            |why: &str| ConfigError::Invalid(format!("database {:?}: {why}", config.name));
        let settings = config
            .aws_access()
            .ok_or_else(|| invalid("the aws block is missing"))?;
        let region = config
            .aws_region()
            .ok_or_else(|| invalid("aws.region is required"))?;
        let first = settings.assume_role_arn.map(|arn| FirstHop {
            role_arn: arn.to_owned(),
            external_id: settings.external_id.map(str::to_owned),
        });
        let chain = RoleChain::new(&aws.sdk, &region, settings.endpoints.sts.as_deref(), first);
        Ok(AwsDatabase {
            database: config.name.clone(),
            kind: config.kind.as_str(),
            region,
            account_id: config.aws_account_id(),
            aws,
            chain,
            workgroup: None,
            rds_instance: None,
        })
    }

    /// The AWS account; IAM roles in `db_users` match by name or ARN in it.
    pub fn account_id(&self) -> Option<&str> {
        self.account_id.as_deref()
    }

    /// The RDS instance, for hints.
    pub fn rds_instance(&self) -> Option<&str> {
        self.rds_instance.as_deref()
    }

    /// The ARN of the IAM role a Redshift db user names (by name, or by ARN
    /// in the database's account).
    pub fn role_arn(&self, db_user: &str) -> Result<String, AwsError> {
        let not_a_role = || AwsError::NotARole {
            db_user: db_user.to_owned(),
        };
        let account = self.account_id.as_deref().ok_or_else(not_a_role)?;
        if db_user.starts_with("arn:") {
            if !is_role_arn(db_user) {
                return Err(not_a_role());
            }
            let found = db_user.split(':').nth(4).unwrap_or_default();
            if found != account {
                return Err(AwsError::OtherAccount {
                    db_user: db_user.to_owned(),
                    found: found.to_owned(),
                    expected: account.to_owned(),
                });
            }
            return Ok(db_user.to_owned());
        }
        // IAM role names: 1-64 of letters, digits and +=,.@_-
        let valid = !db_user.is_empty()
            && db_user.len() <= 64
            && db_user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
        if !valid {
            return Err(not_a_role());
        }
        Ok(format!(
            "arn:{}:iam::{account}:role/{db_user}",
            partition(&self.region)
        ))
    }

    /// Temporary credentials of the IAM role `db_user` for `db_name`:
    /// cached ones while they last, otherwise assume the role (behind the
    /// first hop, if any) and call `GetCredentials`.
    pub(crate) async fn redshift_login(
        &self,
        db_user: &str,
        db_name: &str,
    ) -> Result<RedshiftLogin, AwsError> {
        let workgroup = self.workgroup()?;
        let role_arn = self.role_arn(db_user)?;
        if let Some(credentials) = workgroup.cached(&role_arn, db_name) {
            return Ok(RedshiftLogin {
                role_arn,
                credentials,
                cached: true,
            });
        }
        let _refreshing = workgroup.refresh_lock().await;
        // Someone else may have refreshed while we waited.
        if let Some(credentials) = workgroup.cached(&role_arn, db_name) {
            return Ok(RedshiftLogin {
                role_arn,
                credentials,
                cached: false,
            });
        }
        let role = self.chain.assume(&self.aws, &role_arn).await?;
        let credentials = workgroup
            .get_credentials(role.credentials, &role_arn, db_name)
            .await?;
        Ok(RedshiftLogin {
            role_arn,
            credentials,
            cached: false,
        })
    }

    /// Forgets Redshift credentials the database refused.
    pub(crate) fn forget(&self, role_arn: &str, db_name: &str) {
        if let Some(workgroup) = &self.workgroup {
            workgroup.forget(role_arn, db_name);
        }
    }

    /// The RDS IAM authentication token for `db_user` at `host:port`,
    /// signed as the gateway's identity for this database.
    pub(crate) async fn rds_token(
        &self,
        host: &str,
        port: u16,
        db_user: &str,
    ) -> Result<String, AwsError> {
        let identity = self.chain.gateway(&self.aws).await?;
        rds::auth_token(
            host,
            port,
            db_user,
            &self.region,
            &identity.credentials,
            SystemTime::now(),
        )
        .map_err(|e| AwsError::Failed {
            service: "Amazon RDS",
            operation: "generate-db-auth-token",
            detail: e.to_string(),
        })
    }

    fn workgroup(&self) -> Result<&Workgroup, AwsError> {
        self.workgroup.as_ref().ok_or_else(|| AwsError::Failed {
            service: "Redshift Serverless",
            operation: "GetCredentials",
            detail: format!("database {:?} has no workgroup", self.database),
        })
    }

    /// The workgroup's endpoint: what `GetWorkgroup` said, asked now if
    /// it was not asked before.
    pub(crate) async fn workgroup_info(&self) -> Result<WorkgroupInfo, AwsError> {
        let workgroup = self.workgroup()?;
        if let Some(info) = workgroup.known() {
            return Ok(info);
        }
        let identity = self.chain.gateway(&self.aws).await?;
        workgroup.describe(identity.credentials).await
    }

    /// The workgroup's endpoint and AWS tags, asked of AWS now.
    pub(crate) async fn discover(
        &self,
    ) -> Result<(WorkgroupInfo, BTreeMap<String, String>), AwsError> {
        let workgroup = self.workgroup()?;
        let identity = self.chain.gateway(&self.aws).await?;
        let info = workgroup.describe(identity.credentials.clone()).await?;
        let tags = match &info.arn {
            Some(arn) => workgroup.tags(identity.credentials, arn).await?,
            None => BTreeMap::new(),
        };
        Ok((info, tags))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DatabaseKindConfig;

    fn database(yaml: &str) -> AwsDatabase {
        let config: DatabaseConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let aws = Arc::new(
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(Aws::load(
                    AwsIdentity::Nothing,
                    "eu-central-1",
                    Duration::from_secs(1),
                )),
        );
        match &config.kind {
            DatabaseKindConfig::RdsPostgres(rds) => AwsDatabase::rds(&config, rds, aws),
            DatabaseKindConfig::RedshiftServerless(rs) => {
                AwsDatabase::redshift_serverless(&config, rs, aws)
            }
            DatabaseKindConfig::SelfHosted(_) => panic!("an AWS database"),
        }
        .unwrap()
    }

    #[test]
    fn db_users_name_roles_by_name_or_by_arn_in_the_account() {
        let db = database(
            "name: wh\nkind: redshift-serverless\naws: { region: eu-central-1, account_id: '111111111111', redshift_serverless: { workgroup_name: wg } }\n",
        );
        assert_eq!(
            db.role_arn("analyst").unwrap(),
            "arn:aws:iam::111111111111:role/analyst"
        );
        assert_eq!(
            db.role_arn("arn:aws:iam::111111111111:role/team/analyst")
                .unwrap(),
            "arn:aws:iam::111111111111:role/team/analyst"
        );
        assert!(matches!(
            db.role_arn("arn:aws:iam::222222222222:role/analyst"),
            Err(AwsError::OtherAccount { .. })
        ));
        for bad in [
            "",
            "IAMR:analyst",
            "a b",
            "arn:aws:iam::111111111111:user/x",
        ] {
            assert!(
                matches!(db.role_arn(bad), Err(AwsError::NotARole { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn credentials_are_renewed_shortly_before_they_expire() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            renew_at(t0, t0 + Duration::from_secs(3600)),
            t0 + Duration::from_secs(3300)
        );
        assert_eq!(
            renew_at(t0, t0 + Duration::from_secs(900)),
            t0 + Duration::from_secs(720)
        );
        assert_eq!(
            renew_at(t0, t0 + Duration::from_secs(5)),
            t0 + Duration::from_secs(4)
        );
        assert_eq!(partition("cn-north-1"), "aws-cn");
        assert_eq!(partition("eu-west-1"), "aws");
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let identity = AwsIdentity::Static {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "very-secret".into(),
        };
        assert!(!format!("{identity:?}").contains("very-secret"));
    }
}
