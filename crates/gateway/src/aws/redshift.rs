//! Amazon Redshift Serverless: the workgroup's endpoint and tags
//! (`GetWorkgroup`, `ListTagsForResource`, as the gateway's identity) and
//! temporary database credentials for an IAM role (`GetCredentials`, as the
//! role). Credentials are cached per role and database name until shortly
//! before they expire.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_redshiftserverless::config::IdentityCache;

use super::errors::{AwsError, Failure};
use super::renew_at;

/// The service name in errors.
const SERVICE: &str = "Redshift Serverless";

/// What `GetWorkgroup` tells about a workgroup.
#[derive(Clone, Debug)]
pub(crate) struct WorkgroupInfo {
    /// `arn:aws:redshift-serverless:REGION:ACCOUNT:workgroup/ID`.
    pub arn: Option<String>,
    /// The endpoint's host name.
    pub address: String,
    /// The endpoint's port.
    pub port: u16,
}

/// Temporary database credentials of an IAM role.
#[derive(Clone)]
pub(crate) struct DbCredentials {
    /// `IAMR:<role name>`.
    pub user: String,
    /// The temporary password. Never log it.
    pub password: String,
    /// When Redshift stops accepting it.
    pub expires: SystemTime,
    renew_at: SystemTime,
}

impl std::fmt::Debug for DbCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbCredentials")
            .field("user", &self.user)
            .field("password", &"** redacted **")
            .field("expires", &self.expires)
            .finish()
    }
}

/// One workgroup and the credentials fetched for it.
pub(crate) struct Workgroup {
    /// `aws.redshift_serverless.workgroup_name`.
    pub name: String,
    sdk: SdkConfig,
    region: String,
    account_id: String,
    endpoint: String,
    endpoint_override: bool,
    info: Mutex<Option<WorkgroupInfo>>,
    /// By (role ARN, database name).
    credentials: Mutex<HashMap<(String, String), DbCredentials>>,
    /// One refresh at a time: concurrent logins wait for it, not repeat it.
    refreshing: tokio::sync::Mutex<()>,
}

impl Workgroup {
    /// The workgroup `name` in `region` of `account_id`, at `endpoint_url`
    /// when given.
    pub(crate) fn new(
        sdk: &SdkConfig,
        name: &str,
        region: &str,
        account_id: &str,
        endpoint_url: Option<&str>,
    ) -> Self {
        Workgroup {
            name: name.to_owned(),
            sdk: sdk.clone(),
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            endpoint: endpoint_url
                .map(str::to_owned)
                .unwrap_or_else(|| format!("https://redshift-serverless.{region}.amazonaws.com")),
            endpoint_override: endpoint_url.is_some(),
            info: Mutex::new(None),
            credentials: Mutex::new(HashMap::new()),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn client(&self, credentials: Credentials) -> aws_sdk_redshiftserverless::Client {
        let mut config = aws_sdk_redshiftserverless::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(self.region.clone()))
            .credentials_provider(credentials)
            .identity_cache(IdentityCache::no_cache());
        if self.endpoint_override {
            config = config.endpoint_url(self.endpoint.clone());
        }
        aws_sdk_redshiftserverless::Client::from_conf(config.build())
    }

    /// The workgroup's ARN for policies: the real one once known.
    fn arn_for_policy(&self) -> String {
        self.known().and_then(|info| info.arn).unwrap_or_else(|| {
            format!(
                "arn:{}:redshift-serverless:{}:{}:workgroup/*",
                super::partition(&self.region),
                self.region,
                self.account_id
            )
        })
    }

    /// What `GetWorkgroup` said last, if it was asked.
    pub(crate) fn known(&self) -> Option<WorkgroupInfo> {
        self.info.lock().unwrap().clone()
    }

    /// Calls `GetWorkgroup` as `credentials` (the gateway's identity) and
    /// remembers the answer.
    pub(crate) async fn describe(
        &self,
        credentials: Credentials,
    ) -> Result<WorkgroupInfo, AwsError> {
        let output = self
            .client(credentials)
            .get_workgroup()
            .workgroup_name(&self.name)
            .send()
            .await
            .map_err(|e| self.metadata_error("GetWorkgroup", Failure::of(&e)))?;
        let workgroup = output.workgroup();
        let endpoint = workgroup.and_then(|w| w.endpoint());
        let (Some(address), Some(port)) = (
            endpoint.and_then(|e| e.address()),
            endpoint.and_then(|e| e.port()),
        ) else {
            return Err(AwsError::NoEndpoint(self.name.clone()));
        };
        let port = u16::try_from(port).map_err(|_| AwsError::Failed {
            service: SERVICE,
            operation: "GetWorkgroup",
            detail: format!("endpoint port {port} is out of range"),
        })?;
        let info = WorkgroupInfo {
            arn: workgroup.and_then(|w| w.workgroup_arn()).map(str::to_owned),
            address: address.to_owned(),
            port,
        };
        *self.info.lock().unwrap() = Some(info.clone());
        Ok(info)
    }

    /// The workgroup's AWS tags (`ListTagsForResource`).
    pub(crate) async fn tags(
        &self,
        credentials: Credentials,
        arn: &str,
    ) -> Result<BTreeMap<String, String>, AwsError> {
        let output = self
            .client(credentials)
            .list_tags_for_resource()
            .resource_arn(arn)
            .send()
            .await
            .map_err(|e| self.metadata_error("ListTagsForResource", Failure::of(&e)))?;
        Ok(output
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect())
    }

    fn metadata_error(&self, operation: &'static str, failure: Failure) -> AwsError {
        match failure.common(SERVICE, operation, &self.region, &self.endpoint) {
            Err(e) => e,
            Ok((code, message)) => match code.as_str() {
                "ResourceNotFoundException" => AwsError::UnknownWorkgroup {
                    workgroup: self.name.clone(),
                    region: self.region.clone(),
                    message,
                },
                "AccessDeniedException" | "AccessDenied" => AwsError::MetadataDenied {
                    operation,
                    workgroup: self.name.clone(),
                    message,
                },
                _ => AwsError::Failed {
                    service: SERVICE,
                    operation,
                    detail: format!("{code}: {message}"),
                },
            },
        }
    }

    /// Cached credentials of `role_arn` for `db_name`, if still good.
    pub(crate) fn cached(&self, role_arn: &str, db_name: &str) -> Option<DbCredentials> {
        let cache = self.credentials.lock().unwrap();
        let hit = cache.get(&(role_arn.to_owned(), db_name.to_owned()))?;
        (SystemTime::now() < hit.renew_at).then(|| hit.clone())
    }

    /// Drops cached credentials the database refused.
    pub(crate) fn forget(&self, role_arn: &str, db_name: &str) {
        self.credentials
            .lock()
            .unwrap()
            .remove(&(role_arn.to_owned(), db_name.to_owned()));
    }

    /// Waits for any other refresh; the guard keeps others waiting.
    pub(crate) async fn refresh_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.refreshing.lock().await
    }

    /// `GetCredentials` for `db_name`, called as the role `role_arn`
    /// (whose credentials are `role`); caches the answer.
    pub(crate) async fn get_credentials(
        &self,
        role: Credentials,
        role_arn: &str,
        db_name: &str,
    ) -> Result<DbCredentials, AwsError> {
        let fetched = SystemTime::now();
        let output = self
            .client(role)
            .get_credentials()
            .workgroup_name(&self.name)
            .db_name(db_name)
            .send()
            .await;
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                let (code, message) = Failure::of(&e).common(
                    SERVICE,
                    "GetCredentials",
                    &self.region,
                    &self.endpoint,
                )?;
                return Err(match code.as_str() {
                    "AccessDeniedException" | "AccessDenied" => AwsError::GetCredentialsDenied {
                        role_arn: role_arn.to_owned(),
                        workgroup: self.name.clone(),
                        workgroup_arn: self.arn_for_policy(),
                        message,
                    },
                    "ResourceNotFoundException" => AwsError::UnknownWorkgroup {
                        workgroup: self.name.clone(),
                        region: self.region.clone(),
                        message,
                    },
                    _ => AwsError::Failed {
                        service: SERVICE,
                        operation: "GetCredentials",
                        detail: format!("{code}: {message}"),
                    },
                });
            }
        };
        let (Some(user), Some(password)) = (output.db_user(), output.db_password()) else {
            return Err(AwsError::Failed {
                service: SERVICE,
                operation: "GetCredentials",
                detail: "the answer has no user or password".into(),
            });
        };
        let expires = output
            .expiration()
            .and_then(|t| SystemTime::try_from(*t).ok())
            .unwrap_or(fetched + Duration::from_secs(900));
        let credentials = DbCredentials {
            user: user.to_owned(),
            password: password.to_owned(),
            expires,
            renew_at: renew_at(fetched, expires),
        };
        tracing::debug!(workgroup = %self.name, %role_arn, %db_name, user = %credentials.user, "got Redshift Serverless credentials");
        self.credentials.lock().unwrap().insert(
            (role_arn.to_owned(), db_name.to_owned()),
            credentials.clone(),
        );
        Ok(credentials)
    }
}
