//! What can go wrong between the gateway and AWS, and the sentence (with
//! the fix) that the database client, the CLI and the app show. The
//! sentences follow the troubleshooting section of the Redshift Serverless
//! source document: no credentials in the chain, AccessDenied on
//! `sts:AssumeRole`, timeouts, missing `GetCredentials` permission.

use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use postern_pgwire::ErrorFields;

/// An AWS failure. [`AwsError::client_fields`] is the text users see;
/// `Display` (with the service's own message) goes to the log.
#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// The credential chain found nothing (environment, shared files, web
    /// identity, container or instance metadata).
    #[error("no AWS credentials in the chain: {detail}")]
    NoCredentials {
        /// The chain's explanation (log only).
        detail: String,
    },
    /// `sts:AssumeRole` was refused.
    #[error("{} may not assume {role_arn}: {message}", caller.as_deref().unwrap_or("the gateway"))]
    AssumeRoleDenied {
        /// The role to assume.
        role_arn: String,
        /// The identity that asked (the gateway's, or the role of the first hop).
        caller: Option<String>,
        /// Whether an external ID was sent (the first hop of a chain).
        external_id: bool,
        /// STS's message (log only).
        message: String,
    },
    /// AWS refused the gateway's own credentials (unknown key, expired token,
    /// bad signature).
    #[error("AWS rejected the gateway's credentials: {code}: {message}")]
    CredentialsRejected {
        /// The AWS error code.
        code: String,
        /// The service's message (log only).
        message: String,
    },
    /// `redshift-serverless:GetCredentials` was refused for the role.
    #[error("{role_arn} may not call GetCredentials on workgroup {workgroup}: {message}")]
    GetCredentialsDenied {
        /// The role the gateway assumed.
        role_arn: String,
        /// Workgroup name.
        workgroup: String,
        /// Workgroup ARN, or a pattern for it when it is not known.
        workgroup_arn: String,
        /// The service's message (log only).
        message: String,
    },
    /// The gateway may not read the workgroup's metadata.
    #[error("the gateway may not call {operation} on workgroup {workgroup}: {message}")]
    MetadataDenied {
        /// `GetWorkgroup` or `ListTagsForResource`.
        operation: &'static str,
        /// Workgroup name.
        workgroup: String,
        /// The service's message (log only).
        message: String,
    },
    /// The workgroup does not exist (or is invisible to the caller).
    #[error("workgroup {workgroup} not found in {region}: {message}")]
    UnknownWorkgroup {
        /// Workgroup name.
        workgroup: String,
        /// Region searched.
        region: String,
        /// The service's message (log only).
        message: String,
    },
    /// The workgroup has no endpoint (still being created, or deleted).
    #[error("workgroup {0} has no endpoint")]
    NoEndpoint(String),
    /// An AWS API did not answer in time.
    #[error("timed out calling {service} at {endpoint}")]
    Timeout {
        /// `AWS STS` or `Redshift Serverless`.
        service: &'static str,
        /// Region of the endpoint.
        region: String,
        /// The URL called (log only).
        endpoint: String,
    },
    /// An AWS API could not be reached at all.
    #[error("cannot reach {service} at {endpoint}: {detail}")]
    Unreachable {
        /// `AWS STS` or `Redshift Serverless`.
        service: &'static str,
        /// Region of the endpoint.
        region: String,
        /// The URL called (log only).
        endpoint: String,
        /// The connection error (log only).
        detail: String,
    },
    /// The db user is neither an IAM role name nor a role ARN.
    #[error("db user {db_user:?} is not an IAM role name or role ARN")]
    NotARole {
        /// What was asked for.
        db_user: String,
    },
    /// The db user is the ARN of a role in another account.
    #[error("db user {db_user:?} is in account {found}, the database in {expected}")]
    OtherAccount {
        /// What was asked for.
        db_user: String,
        /// The ARN's account.
        found: String,
        /// The database's account.
        expected: String,
    },
    /// Any other AWS failure (details in the log only).
    #[error("{service} {operation} failed: {detail}")]
    Failed {
        /// `AWS STS` or `Redshift Serverless`.
        service: &'static str,
        /// The operation.
        operation: &'static str,
        /// What happened (log only).
        detail: String,
    },
}

impl AwsError {
    /// The PostgreSQL error a database client sees for database `database`.
    pub fn client_fields(&self, database: &str) -> ErrorFields {
        use AwsError::*;
        match self {
            NoCredentials { .. } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: the gateway found no AWS credentials, so it cannot log in to database {database:?}"
                ),
            )
            .with_hint(
                "an administrator must give the gateway an AWS identity: an EC2 instance profile, \
                 IAM Roles for Service Accounts on EKS, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 (or AWS_PROFILE and a shared credentials file) in its environment; on EKS and in \
                 containers, instance metadata (IMDSv2) answers only when the instance's \
                 HttpPutResponseHopLimit is at least 2 (see `aws ec2 describe-instances`)",
            ),
            AssumeRoleDenied {
                role_arn,
                caller,
                external_id,
                ..
            } => {
                let who = match caller {
                    Some(arn) => format!("the gateway's identity {arn}"),
                    None => "the gateway's identity".to_owned(),
                };
                let mut hint = format!(
                    "test it as the gateway's identity with: aws sts assume-role --role-arn {role_arn} --role-session-name test-trust-relationship"
                );
                if *external_id {
                    hint.push_str(
                        "; the trust policy's sts:ExternalId condition must equal aws.external_id of the database",
                    );
                }
                ErrorFields::fatal(
                    "28000",
                    format!(
                        "postern: {who} cannot assume {role_arn}: check the role's trust policy, \
                         the gateway's permission policy for sts:AssumeRole, and any permission boundary"
                    ),
                )
                .with_hint(hint)
            }
            CredentialsRejected { code, .. } => ErrorFields::fatal(
                "28000",
                format!("postern: AWS rejected the gateway's own credentials ({code})"),
            )
            .with_hint("an administrator must renew or correct the gateway's AWS credentials"),
            GetCredentialsDenied {
                role_arn,
                workgroup,
                workgroup_arn,
                ..
            } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: IAM role {role_arn} may not get database credentials for Redshift Serverless \
                     workgroup {workgroup:?}: the role's permission policy needs \
                     redshift-serverless:GetCredentials on {workgroup_arn}"
                ),
            )
            .with_hint("an administrator must attach such a policy to the role"),
            MetadataDenied {
                operation,
                workgroup,
                ..
            } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: the gateway may not read Redshift Serverless workgroup {workgroup:?}: \
                     its permission policy needs redshift-serverless:{operation}"
                ),
            )
            .with_hint(
                "an administrator must allow the gateway's identity redshift-serverless:GetWorkgroup \
                 (or set the database's uri in the gateway configuration)",
            ),
            UnknownWorkgroup {
                workgroup, region, ..
            } => ErrorFields::fatal(
                "08001",
                format!(
                    "postern: Redshift Serverless workgroup {workgroup:?} of database {database:?} \
                     does not exist in region {region}, or the gateway may not see it"
                ),
            )
            .with_hint(
                "an administrator must check aws.redshift_serverless.workgroup_name and aws.region of \
                 this database in the gateway configuration",
            ),
            NoEndpoint(workgroup) => ErrorFields::fatal(
                "08001",
                format!(
                    "postern: Redshift Serverless workgroup {workgroup:?} has no endpoint yet (is it still being created?)"
                ),
            ),
            Timeout {
                service, region, ..
            } => ErrorFields::fatal(
                "08001",
                format!("postern: the gateway timed out reaching {service} in {region}"),
            )
            .with_hint(
                "check the gateway's network path to AWS: security group outbound rules, routes \
                 and NAT, or a VPC endpoint for the service (and aws.endpoints if one is configured)",
            ),
            Unreachable {
                service, region, ..
            } => ErrorFields::fatal(
                "08001",
                format!("postern: the gateway cannot connect to {service} in {region}"),
            )
            .with_hint(
                "check the gateway's network path to AWS: security group outbound rules, routes \
                 and NAT, or a VPC endpoint for the service (and aws.endpoints if one is configured)",
            ),
            NotARole { db_user } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: on database {database:?} the db user is an IAM role, by name or ARN; {db_user:?} is neither"
                ),
            )
            .with_hint("run `postern db ls -v` to see the IAM roles your roles allow"),
            OtherAccount {
                db_user, expected, ..
            } => ErrorFields::fatal(
                "28000",
                format!(
                    "postern: IAM role {db_user} is not in AWS account {expected} of database {database:?}"
                ),
            )
            .with_hint("use a role of the database's account, by name or ARN"),
            Failed {
                service, operation, ..
            } => ErrorFields::fatal(
                "08001",
                format!("postern: {service} {operation} failed; see the gateway log"),
            ),
        }
    }
}

/// How an AWS SDK call failed, before knowing what it means for the caller.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No answer in time.
    Timeout,
    /// No connection.
    Unreachable(String),
    /// The service answered with an error code.
    Service {
        /// E.g. `AccessDenied`, `ResourceNotFoundException`.
        code: String,
        /// The service's message.
        message: String,
    },
    /// Anything else.
    Other(String),
}

impl Failure {
    /// Sorts an SDK error.
    pub(crate) fn of<E, R>(error: &SdkError<E, R>) -> Failure
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match error {
            SdkError::TimeoutError(_) => Failure::Timeout,
            SdkError::DispatchFailure(failure) if failure.is_timeout() => Failure::Timeout,
            SdkError::DispatchFailure(failure) if failure.is_io() => {
                Failure::Unreachable(DisplayErrorContext(error).to_string())
            }
            SdkError::ServiceError(service) => Failure::Service {
                code: service.err().code().unwrap_or("Unknown").to_owned(),
                message: service.err().message().unwrap_or_default().to_owned(),
            },
            other => Failure::Other(DisplayErrorContext(other).to_string()),
        }
    }

    /// Whether AWS refused the caller's own credentials.
    pub(crate) fn rejected_credentials(code: &str) -> bool {
        matches!(
            code,
            "InvalidClientTokenId"
                | "ExpiredToken"
                | "ExpiredTokenException"
                | "SignatureDoesNotMatch"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
        )
    }

    /// The error for failures every operation shares (network, rejected
    /// credentials); `None` for service errors the caller must interpret.
    pub(crate) fn common(
        self,
        service: &'static str,
        operation: &'static str,
        region: &str,
        endpoint: &str,
    ) -> Result<(String, String), AwsError> {
        match self {
            Failure::Timeout => Err(AwsError::Timeout {
                service,
                region: region.to_owned(),
                endpoint: endpoint.to_owned(),
            }),
            Failure::Unreachable(detail) => Err(AwsError::Unreachable {
                service,
                region: region.to_owned(),
                endpoint: endpoint.to_owned(),
                detail,
            }),
            Failure::Service { code, message } if Self::rejected_credentials(&code) => {
                Err(AwsError::CredentialsRejected { code, message })
            }
            Failure::Service { code, message } => Ok((code, message)),
            Failure::Other(detail) => Err(AwsError::Failed {
                service,
                operation,
                detail,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_name_the_fix_and_keep_internals_out() {
        let denied = AwsError::AssumeRoleDenied {
            role_arn: "arn:aws:iam::111111111111:role/db-user-role".into(),
            caller: Some(
                "arn:aws:sts::111111111111:assumed-role/teleport-db-service-role/i-1".into(),
            ),
            external_id: true,
            message: "User: secret internals".into(),
        }
        .client_fields("warehouse");
        assert_eq!(denied.code, "28000");
        assert_eq!(
            denied.message,
            "postern: the gateway's identity arn:aws:sts::111111111111:assumed-role/teleport-db-service-role/i-1 \
             cannot assume arn:aws:iam::111111111111:role/db-user-role: check the role's trust policy, \
             the gateway's permission policy for sts:AssumeRole, and any permission boundary"
        );
        let hint = denied.hint.unwrap();
        assert!(hint.contains(
            "aws sts assume-role --role-arn arn:aws:iam::111111111111:role/db-user-role"
        ));
        assert!(hint.contains("sts:ExternalId"));
        assert!(!denied.message.contains("internals"));

        let none = AwsError::NoCredentials {
            detail: "no providers in chain".into(),
        }
        .client_fields("warehouse");
        assert!(none.message.contains("found no AWS credentials"));
        assert!(none.hint.unwrap().contains("HttpPutResponseHopLimit"));

        let timeout = AwsError::Timeout {
            service: "AWS STS",
            region: "eu-central-1".into(),
            endpoint: "https://10.0.0.1".into(),
        }
        .client_fields("warehouse");
        assert_eq!(timeout.code, "08001");
        assert!(!timeout.message.contains("10.0.0.1"));
        assert!(timeout.hint.unwrap().contains("VPC endpoint"));
    }
}
