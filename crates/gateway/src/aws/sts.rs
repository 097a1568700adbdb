//! AWS STS: the gateway's identity for a database (its own, or the role of
//! `assume_role_arn`) and the IAM roles assumed from it. At most two roles
//! are chained: `assume_role_arn` (with the external ID, the only hop that
//! sends it), then the db user's role.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;
use aws_sdk_sts::config::IdentityCache;

use super::errors::{AwsError, Failure};
use super::{Aws, renew_at};

/// The service name in errors.
const SERVICE: &str = "AWS STS";
/// `RoleSessionName` of every assumed role; CloudTrail shows it.
const SESSION_NAME: &str = "postern-gateway";

/// The first hop of a role chain.
#[derive(Clone, Debug)]
pub(crate) struct FirstHop {
    /// `aws.assume_role_arn`.
    pub role_arn: String,
    /// `aws.external_id`; sent on this hop only. Not a secret, but not
    /// logged either.
    pub external_id: Option<String>,
}

/// Credentials of an assumed role, and who they are.
#[derive(Clone, Debug)]
pub(crate) struct Assumed {
    /// The temporary credentials (Debug redacts the secret).
    pub credentials: Credentials,
    /// `arn:aws:sts::ACCOUNT:assumed-role/NAME/SESSION`.
    pub arn: Option<String>,
    /// When to assume the role again.
    renew: SystemTime,
}

/// STS for one database: its region and endpoint, and the roles assumed so far.
pub(crate) struct RoleChain {
    sdk: SdkConfig,
    region: String,
    /// The URL called (for logs), and whether it overrides AWS's own.
    endpoint: String,
    endpoint_override: bool,
    first: Option<FirstHop>,
    /// Assumed roles by ARN (the first hop included).
    cache: Mutex<HashMap<String, Assumed>>,
}

impl RoleChain {
    /// STS in `region`, at `endpoint_url` when given.
    pub(crate) fn new(
        sdk: &SdkConfig,
        region: &str,
        endpoint_url: Option<&str>,
        first: Option<FirstHop>,
    ) -> Self {
        RoleChain {
            sdk: sdk.clone(),
            region: region.to_owned(),
            endpoint: endpoint_url
                .map(str::to_owned)
                .unwrap_or_else(|| format!("https://sts.{region}.amazonaws.com")),
            endpoint_override: endpoint_url.is_some(),
            first,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, credentials: Credentials) -> aws_sdk_sts::Client {
        let mut config = aws_sdk_sts::config::Builder::from(&self.sdk)
            .region(aws_config::Region::new(self.region.clone()))
            .credentials_provider(credentials)
            // Each client has fixed credentials: nothing to cache, and a
            // shared cache would only collect their partitions.
            .identity_cache(IdentityCache::no_cache());
        if self.endpoint_override {
            config = config.endpoint_url(self.endpoint.clone());
        }
        aws_sdk_sts::Client::from_conf(config.build())
    }

    /// The gateway's identity for this database: its own credentials, or
    /// those of `assume_role_arn` assumed with them.
    pub(crate) async fn gateway(&self, aws: &Aws) -> Result<Assumed, AwsError> {
        let own = aws.own_credentials().await?;
        let Some(first) = &self.first else {
            return Ok(Assumed {
                credentials: own,
                arn: None,
                renew: SystemTime::now(),
            });
        };
        self.assume_cached(own, None, &first.role_arn, first.external_id.as_deref())
            .await
    }

    /// Credentials of `role_arn`, assumed from the gateway's identity.
    pub(crate) async fn assume(&self, aws: &Aws, role_arn: &str) -> Result<Assumed, AwsError> {
        let from = self.gateway(aws).await?;
        self.assume_cached(from.credentials, from.arn, role_arn, None)
            .await
    }

    async fn assume_cached(
        &self,
        from: Credentials,
        from_arn: Option<String>,
        role_arn: &str,
        external_id: Option<&str>,
    ) -> Result<Assumed, AwsError> {
        if let Some(hit) = self.cache.lock().unwrap().get(role_arn)
            && SystemTime::now() < hit.renew
        {
            return Ok(hit.clone());
        }
        let fetched = SystemTime::now();
        let result = self
            .client(from.clone())
            .assume_role()
            .role_arn(role_arn)
            .role_session_name(SESSION_NAME)
            .set_external_id(external_id.map(str::to_owned))
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let failure = Failure::of(&error);
                let (code, message) =
                    failure.common(SERVICE, "AssumeRole", &self.region, &self.endpoint)?;
                if code == "AccessDenied" {
                    // The caller's ARN makes the error actionable; the first
                    // hop's caller is the gateway itself: ask STS who that is.
                    let caller = match from_arn {
                        Some(arn) => Some(arn),
                        None => self.caller_arn(from).await,
                    };
                    return Err(AwsError::AssumeRoleDenied {
                        role_arn: role_arn.to_owned(),
                        caller,
                        external_id: external_id.is_some(),
                        message,
                    });
                }
                return Err(AwsError::Failed {
                    service: SERVICE,
                    operation: "AssumeRole",
                    detail: format!("{code}: {message}"),
                });
            }
        };
        let Some(c) = output.credentials() else {
            return Err(AwsError::Failed {
                service: SERVICE,
                operation: "AssumeRole",
                detail: "the answer has no credentials".into(),
            });
        };
        let expiry =
            SystemTime::try_from(*c.expiration()).unwrap_or(fetched + Duration::from_secs(900));
        let assumed = Assumed {
            credentials: Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_owned()),
                Some(expiry),
                "postern-assume-role",
            ),
            arn: output.assumed_role_user().map(|u| u.arn().to_owned()),
            renew: renew_at(fetched, expiry),
        };
        tracing::debug!(%role_arn, assumed = ?assumed.arn, "assumed IAM role");
        self.cache
            .lock()
            .unwrap()
            .insert(role_arn.to_owned(), assumed.clone());
        Ok(assumed)
    }

    /// The ARN of the identity behind `credentials`, for error messages;
    /// None when STS will not say.
    pub(crate) async fn caller_arn(&self, credentials: Credentials) -> Option<String> {
        match self.client(credentials).get_caller_identity().send().await {
            Ok(identity) => identity.arn().map(str::to_owned),
            Err(e) => {
                tracing::debug!(error = %aws_sdk_sts::error::DisplayErrorContext(&e), "GetCallerIdentity failed");
                None
            }
        }
    }
}
