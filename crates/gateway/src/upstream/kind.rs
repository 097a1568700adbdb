//! Each database kind's rules, in one place: its default database name,
//! how the gateway gets credentials, what a refusal of them means, and
//! what provisioning must add.
//!
//! An enum with methods rather than a trait with one type per kind: the
//! kinds are a closed set named in `gateway.yaml`, only the AWS kinds carry
//! data, and one `match` per question keeps the kinds' answers side by side
//! where they can be compared.

use std::sync::Arc;

use postern_pgwire::ErrorFields;

use super::{LoginCredentials, Origin, Refusal, Upstream, UpstreamError};
use crate::aws::{AwsDatabase, AwsError};
use crate::names::{DbName, DbUser};

/// The RDS role that lets a user log in with an IAM authentication token.
const RDS_IAM_ROLE: &str = "rds_iam";

/// The database Redshift Serverless creates in every namespace.
const REDSHIFT_DEFAULT_DB: &str = "dev";

/// Where a database runs, with what the gateway needs to log in there.
pub enum Kind {
    /// PostgreSQL the gateway reaches directly: a database-CA client
    /// certificate for the db user, or a configured password.
    SelfHosted,
    /// Amazon RDS for PostgreSQL: an IAM authentication token is the
    /// password, unless one is configured for the db user.
    Rds(Arc<AwsDatabase>),
    /// Amazon Redshift Serverless: the db user is an IAM role whose
    /// temporary credentials (`IAMR:<role>`) the gateway fetches.
    RedshiftServerless(Arc<AwsDatabase>),
}

/// What to do after a database refused a login.
pub(super) enum AfterRefusal {
    /// Fetch credentials again and retry once (stale cached credentials).
    Retry,
    /// Give up with this error.
    Fail(UpstreamError),
}

impl Kind {
    /// The name in `gateway.yaml` and in the catalog.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::SelfHosted => "self-hosted",
            Kind::Rds(_) => "rds-postgres",
            Kind::RedshiftServerless(_) => "redshift-serverless",
        }
    }

    /// The database name a session without one gets; `None`: PostgreSQL's
    /// own default, the db user's name. Redshift's is `dev`.
    pub fn default_db_name(&self) -> Option<&'static str> {
        match self {
            Kind::RedshiftServerless(_) => Some(REDSHIFT_DEFAULT_DB),
            Kind::SelfHosted | Kind::Rds(_) => None,
        }
    }

    /// The AWS account in which db users name IAM roles (by name or ARN);
    /// only Redshift's db users are roles.
    pub fn iam_role_account(&self) -> Option<&str> {
        match self {
            Kind::RedshiftServerless(aws) => aws.account_id(),
            Kind::SelfHosted | Kind::Rds(_) => None,
        }
    }

    /// Whether the gateway can create this kind's database users: not on
    /// Redshift, whose db users are IAM roles.
    pub fn can_provision(&self) -> bool {
        !matches!(self, Kind::RedshiftServerless(_))
    }

    /// Whether sessions can start with PostgreSQL settings given as
    /// startup parameters (`db_session_defaults`): not on Redshift, which
    /// has only some of PostgreSQL's settings.
    pub fn accepts_session_defaults(&self) -> bool {
        !matches!(self, Kind::RedshiftServerless(_))
    }

    /// Db roles every provisioned user needs to log in: on RDS `rds_iam`,
    /// since it logs in with an IAM token.
    pub fn login_roles(&self) -> &'static [&'static str] {
        match self {
            Kind::Rds(_) => &[RDS_IAM_ROLE],
            Kind::SelfHosted | Kind::RedshiftServerless(_) => &[],
        }
    }

    /// How to log in as `db_user` to `db_name`. `configured` is the
    /// password `gateway.yaml` holds for the db user, if any.
    pub(super) async fn credentials(
        &self,
        upstream: &Upstream,
        db_user: &DbUser,
        db_name: &DbName,
        configured: Option<String>,
    ) -> Result<LoginCredentials, UpstreamError> {
        let (db_user, db_name) = (db_user.as_str(), db_name.as_str());
        let aws_error = |error: AwsError| UpstreamError::Aws {
            database: upstream.name.clone(),
            error,
        };
        match self {
            Kind::SelfHosted => Ok(LoginCredentials {
                user: db_user.to_owned(),
                password: configured,
                client_certificate: true,
                origin: Origin::Configured,
            }),
            Kind::Rds(aws) => {
                // A configured password wins (e.g. the master user that
                // provisions users); everyone else uses IAM.
                let (password, origin) = match configured {
                    Some(password) => (password, Origin::Configured),
                    None => {
                        let endpoint = upstream.endpoint()?;
                        let token = aws
                            .rds_token(&endpoint.host, endpoint.port, db_user)
                            .await
                            .map_err(aws_error)?;
                        (token, Origin::RdsToken)
                    }
                };
                Ok(LoginCredentials {
                    user: db_user.to_owned(),
                    password: Some(password),
                    client_certificate: false,
                    origin,
                })
            }
            Kind::RedshiftServerless(aws) => {
                if !upstream.has_endpoint() {
                    let info = aws.workgroup_info().await.map_err(aws_error)?;
                    upstream
                        .set_endpoint(&info.address, info.port)
                        .map_err(UpstreamError::Internal)?;
                    tracing::info!(database = %upstream.name, address = %info.address, port = info.port, "Redshift Serverless endpoint from GetWorkgroup");
                }
                let login = aws
                    .redshift_login(db_user, db_name)
                    .await
                    .map_err(aws_error)?;
                Ok(LoginCredentials {
                    user: login.credentials.user,
                    password: Some(login.credentials.password),
                    client_certificate: false,
                    origin: Origin::Redshift {
                        role_arn: login.role_arn,
                        db_name: db_name.to_owned(),
                        cached: login.cached,
                    },
                })
            }
        }
    }

    /// What the database's refusal of `credentials` means; `retried` says
    /// whether these already are the second ones.
    pub(super) fn after_refusal(
        &self,
        upstream: &Upstream,
        fields: ErrorFields,
        credentials: &LoginCredentials,
        db_user: &DbUser,
        db_name: &DbName,
        retried: bool,
    ) -> AfterRefusal {
        let refusal = Refusal::classify(&fields.code, &fields.message);
        let error = match (self, &credentials.origin, refusal) {
            (Kind::Rds(aws), Origin::RdsToken, Refusal::BadPassword) => {
                UpstreamError::RdsIamRefused {
                    database: upstream.name.clone(),
                    db_user: db_user.to_string(),
                    instance: aws.rds_instance().map(str::to_owned),
                }
            }
            (
                Kind::RedshiftServerless(aws),
                Origin::Redshift {
                    role_arn,
                    db_name: for_db,
                    cached,
                },
                refusal,
            ) => {
                if refusal == Refusal::BadPassword {
                    aws.forget(role_arn, for_db);
                    if *cached && !retried {
                        tracing::info!(database = %upstream.name, %role_arn, "cached Redshift credentials refused; fetching new ones");
                        return AfterRefusal::Retry;
                    }
                }
                // A role without privileges inside the database says so at
                // login (no CONNECT: 42501; no usable user: 28000).
                match refusal {
                    Refusal::NoConnect | Refusal::PermissionDenied | Refusal::NotAuthorized => {
                        UpstreamError::RedshiftNoPrivileges {
                            iam_user: credentials.user.clone(),
                            db_name: db_name.to_string(),
                            message: fields.message,
                        }
                    }
                    Refusal::BadPassword | Refusal::Other => UpstreamError::Refused(fields),
                }
            }
            _ => UpstreamError::Refused(fields),
        };
        AfterRefusal::Fail(error)
    }
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
