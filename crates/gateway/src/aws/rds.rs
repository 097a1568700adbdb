//! Amazon RDS IAM database authentication: the password is a SigV4-presigned
//! `connect` request for the database user, valid for 15 minutes
//! (<https://docs.aws.amazon.com/AmazonRDS/latest/UserGuide/UsingWithRDS.IAMDBAuth.Connecting.html>).
//! The database user must be granted `rds_iam`.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;

/// How long a token is valid (the most RDS accepts).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the RDS authentication token: {0}")]
pub struct TokenError(String);

/// The IAM authentication token for `db_user` at `host:port` in `region`,
/// signed with `credentials` at `time`: the presigned URL
/// `https://HOST:PORT/?Action=connect&DBUser=USER&X-Amz-...` without its
/// scheme. It is a password: never log it.
pub fn auth_token(
    host: &str,
    port: u16,
    db_user: &str,
    region: &str,
    credentials: &Credentials,
    time: SystemTime,
) -> Result<String, TokenError> {
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("rds-db")
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| TokenError(e.to_string()))?
        .into();
    let url = format!(
        "https://{host}:{port}/?Action=connect&DBUser={}",
        encode(db_user)
    );
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| TokenError(e.to_string()))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| TokenError(e.to_string()))?
        .into_parts();
    let mut token = url
        .strip_prefix("https://")
        .expect("built with https://")
        .to_owned();
    for (name, value) in instructions.params() {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.push_str(&encode(value));
    }
    Ok(token)
}

/// Percent-encodes all but RFC 3986's unreserved characters, as SigV4's
/// canonical query string does.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(token: &str) -> Vec<(String, String)> {
        let url = url::Url::parse(&format!("https://{token}")).unwrap();
        url.query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    #[test]
    fn token_is_a_presigned_connect_request() {
        let credentials = Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            None,
            None,
            "test",
        );
        // 2024-01-02T03:04:05Z
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        let host = "prod.abc123.eu-central-1.rds.amazonaws.com";
        let token = auth_token(host, 5432, "app_user", "eu-central-1", &credentials, time).unwrap();

        assert!(token.starts_with(&format!("{host}:5432/?Action=connect&DBUser=app_user&")));
        let params = query(&token);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name} missing from {token}"))
        };
        assert_eq!(get("Action"), "connect");
        assert_eq!(get("DBUser"), "app_user");
        assert_eq!(get("X-Amz-Algorithm"), "AWS4-HMAC-SHA256");
        assert_eq!(
            get("X-Amz-Credential"),
            "AKIAIOSFODNN7EXAMPLE/20240102/eu-central-1/rds-db/aws4_request"
        );
        assert_eq!(get("X-Amz-Date"), "20240102T030405Z");
        assert_eq!(get("X-Amz-Expires"), "900");
        assert_eq!(get("X-Amz-SignedHeaders"), "host");
        assert!(params.iter().all(|(k, _)| k != "X-Amz-Security-Token"));
        // botocore's generate_db_auth_token gives exactly this for the
        // same inputs: any change to the canonical request would break
        // logins on RDS.
        assert_eq!(token, BOTOCORE_TOKEN);
    }

    #[test]
    fn temporary_credentials_carry_their_session_token_and_users_are_encoded() {
        let credentials = Credentials::new(
            "ASIAEXAMPLE",
            "secret",
            Some("token/with+special=chars".into()),
            None,
            "test",
        );
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        let token = auth_token(
            "db.local",
            6543,
            "a user@x",
            "us-east-1",
            &credentials,
            time,
        )
        .unwrap();
        assert!(token.starts_with("db.local:6543/?Action=connect&DBUser=a%20user%40x&"));
        let params = query(&token);
        assert!(params.contains(&("DBUser".into(), "a user@x".into())));
        assert!(params.contains(&(
            "X-Amz-Security-Token".into(),
            "token/with+special=chars".into()
        )));
    }

    const BOTOCORE_TOKEN: &str = "prod.abc123.eu-central-1.rds.amazonaws.com:5432/?Action=connect\
        &DBUser=app_user&X-Amz-Algorithm=AWS4-HMAC-SHA256\
        &X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20240102%2Feu-central-1%2Frds-db%2Faws4_request\
        &X-Amz-Date=20240102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host\
        &X-Amz-Signature=9472c972e869e6de16f830e575f55d3ac02f3dfd62ed88aaaefe14db0d9c75ea";
}
