//! OpenID Connect: the gateway as relying party.
//!
//! The protocol work is `openidconnect`'s: discovery, the authorization URL
//! with PKCE (S256), `state` and `nonce`, the code exchange, and the ID
//! token's signature (against the provider's JWKS), issuer, audience, expiry
//! and nonce. The JWKS is cached and fetched again only when a token names a
//! key the cache does not hold (the provider rotated its keys).
//!
//! What is Postern's: the verified claims become `external.*` traits
//! ([`flatten_claims`]), `claims_to_roles` turns them into roles, and every
//! failure is told apart so the user reads what to do about it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreIdTokenVerifier, CoreJsonWebKey, CoreJsonWebKeySet,
    CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreRevocableToken, CoreRevocationErrorResponse, CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AccessToken, AccessTokenHash, AdditionalClaims, AuthorizationCode, ClaimsVerificationError,
    Client, ClientId, ClientSecret, CsrfToken, DiscoveryError, EmptyExtraTokenFields,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, HttpClientError, IdToken, IdTokenClaims,
    IdTokenFields, IssuerUrl, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, RequestTokenError, Scope, SignatureVerificationError, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::OidcConnectorConfig;
use crate::rbac::whole_value_regex;

/// Clocks of the gateway and the provider may disagree by this much before
/// a token counts as expired or as issued in the future.
const CLOCK_LEEWAY: Duration = Duration::from_secs(120);

/// Time allowed for one request to the provider.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// Claims tried for the Postern username when `username_claim` is not set.
const DEFAULT_USERNAME_CLAIMS: [&str; 3] = ["preferred_username", EMAIL, "sub"];

/// The e-mail claim, usable as a username only when [`EMAIL_VERIFIED`] is true.
const EMAIL: &str = "email";

/// Whether the provider checked that the person controls [`EMAIL`].
const EMAIL_VERIFIED: &str = "email_verified";

/// Claims about the token itself rather than the person: they change at
/// every login and mean nothing to a role template.
const TOKEN_MECHANICS: &[&str] = &[
    "aud",
    "exp",
    "iat",
    "nbf",
    "auth_time",
    "nonce",
    "at_hash",
    "c_hash",
    "azp",
    "sid",
    "jti",
];

/// Why a single sign-on step failed. `Display` is the user-facing sentence.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider did not answer (DNS, connection, TLS, timeout).
    #[error("the gateway cannot reach the identity provider at {url}")]
    Unreachable {
        /// The issuer URL.
        url: String,
    },
    /// The provider answered, but not as OpenID Connect requires.
    #[error("the identity provider at {url} {problem}")]
    Provider {
        /// The issuer URL.
        url: String,
        /// What was wrong, as the end of a sentence.
        problem: String,
    },
    /// The ID token's times do not fit the gateway's clock.
    #[error(
        "the identity provider's ID token {0}; the clocks of the gateway and the identity \
         provider disagree — make sure both keep time with NTP"
    )]
    ClockSkew(String),
    /// The ID token failed verification (signature, issuer, audience, nonce).
    #[error("the identity provider's answer could not be verified ({0}); the sign-in was refused")]
    InvalidToken(String),
    /// No claim can serve as the Postern username; holds the claims tried,
    /// described (`email claim (with email_verified: true)`).
    #[error("the identity provider sent no usable {0} to use as your Postern username")]
    NoUsername(String),
}

/// Every claim the token carries beyond the standard ones.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OtherClaims(pub serde_json::Map<String, Value>);

impl AdditionalClaims for OtherClaims {}

type OidcIdTokenFields = IdTokenFields<
    OtherClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OidcTokenResponse = StandardTokenResponse<OidcIdTokenFields, CoreTokenType>;
/// An ID token with all its claims.
pub type OidcIdToken = IdToken<
    OtherClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type OidcClaims = IdTokenClaims<OtherClaims, CoreGenderClaim>;
type OidcClient = Client<
    OtherClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    OidcTokenResponse,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// A `claims_to_roles` rule, its value compiled.
#[derive(Debug)]
struct RoleRule {
    claim: String,
    value: ValueMatch,
    roles: Vec<String>,
}

#[derive(Debug)]
enum ValueMatch {
    Exact(String),
    Regex(Regex),
}

impl ValueMatch {
    /// `^...$` is a regex over the whole value, as in role label values.
    fn new(value: &str) -> Result<Self, regex::Error> {
        match whole_value_regex(value) {
            Some(regex) => regex.map(ValueMatch::Regex),
            None => Ok(ValueMatch::Exact(value.to_owned())),
        }
    }

    fn matches(&self, candidate: &str) -> bool {
        match self {
            ValueMatch::Exact(v) => v == candidate,
            ValueMatch::Regex(re) => re.is_match(candidate),
        }
    }
}

/// The provider's metadata and signing keys, learned on first use.
struct Provider {
    metadata: CoreProviderMetadata,
    keys: RwLock<CoreJsonWebKeySet>,
    /// One JWKS fetch at a time.
    refetch: tokio::sync::Mutex<()>,
}

/// What a login must remember between the redirect to the provider and the
/// provider's redirect back; stored (with the login) so any replica can
/// finish it. Holds the PKCE verifier: never logged.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct OidcPending {
    /// The `state` parameter (CSRF token) sent to the provider.
    pub state: String,
    nonce: Nonce,
    pkce: PkceCodeVerifier,
}

impl OidcPending {
    #[cfg(test)]
    pub(crate) fn for_tests(state: &str) -> Self {
        OidcPending {
            state: state.to_owned(),
            nonce: Nonce::new("nonce".into()),
            pkce: PkceCodeVerifier::new("verifier".into()),
        }
    }
}

/// A verified sign-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcLogin {
    /// Postern username.
    pub username: String,
    /// Postern roles from `claims_to_roles` (sorted, unique; may be empty).
    pub roles: Vec<String>,
    /// All claims, flattened: the `external.*` traits.
    pub claims: BTreeMap<String, Vec<String>>,
}

/// One configured OpenID Connect provider.
pub struct OidcConnector {
    name: String,
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    scopes: Vec<Scope>,
    redirect: RedirectUrl,
    rules: Vec<RoleRule>,
    username_claim: Option<String>,
    http: reqwest::Client,
    provider: tokio::sync::Mutex<Option<Arc<Provider>>>,
}

/// Why a connector could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
#[error("connector {name:?}: {reason}")]
pub struct SetupError {
    name: String,
    reason: String,
}

impl OidcConnector {
    /// Prepares a connector; the provider is contacted only at the first login,
    /// so a gateway starts while its provider is down.
    pub fn new(config: &OidcConnectorConfig, redirect_url: &str) -> Result<Self, SetupError> {
        let fail = |reason: String| SetupError {
            name: config.name.clone(),
            reason,
        };
        let issuer = IssuerUrl::new(config.issuer_url.clone())
            .map_err(|e| fail(format!("issuer_url: {e}")))?;
        let redirect = RedirectUrl::new(redirect_url.to_owned())
            .map_err(|e| fail(format!("redirect URL {redirect_url:?}: {e}")))?;
        let client_secret = config
            .client_secret()
            .map_err(|e| fail(e.to_string()))?
            .map(ClientSecret::new);
        let rules = config
            .claims_to_roles
            .iter()
            .map(|m| {
                Ok(RoleRule {
                    claim: m.claim.clone(),
                    value: ValueMatch::new(&m.value).map_err(|e| fail(e.to_string()))?,
                    roles: m.roles.clone(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ca_pem = config
            .ca_cert_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))
            })
            .transpose()?;
        let http = http_client(ca_pem.as_deref()).map_err(fail)?;
        Ok(OidcConnector {
            name: config.name.clone(),
            issuer,
            client_id: ClientId::new(config.client_id.clone()),
            client_secret,
            // `openid` is always sent by the authorization request itself.
            scopes: config
                .scopes
                .iter()
                .filter(|s| s.as_str() != "openid")
                .map(|s| Scope::new(s.clone()))
                .collect(),
            redirect,
            rules,
            username_claim: config.username_claim.clone(),
            http,
            provider: tokio::sync::Mutex::new(None),
        })
    }

    /// The connector's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The claims `claims_to_roles` looks at, for the "maps to no role" message.
    pub fn mapped_claims(&self) -> Vec<&str> {
        let mut claims: Vec<&str> = Vec::new();
        for rule in &self.rules {
            if !claims.contains(&rule.claim.as_str()) {
                claims.push(&rule.claim);
            }
        }
        claims
    }

    fn unreachable(&self, what: &str, error: &dyn std::fmt::Display) -> OidcError {
        tracing::warn!(connector = %self.name, issuer = %self.issuer.as_str(), %error, "{what} failed");
        OidcError::Unreachable {
            url: self.issuer.to_string(),
        }
    }

    fn provider_error(&self, problem: impl Into<String>) -> OidcError {
        let problem = problem.into();
        tracing::warn!(connector = %self.name, issuer = %self.issuer.as_str(), %problem, "identity provider misbehaved");
        OidcError::Provider {
            url: self.issuer.to_string(),
            problem,
        }
    }

    fn discovery_error(&self, e: DiscoveryError<HttpClientError<reqwest::Error>>) -> OidcError {
        match e {
            DiscoveryError::Request(inner) => self.unreachable("discovery", &inner),
            DiscoveryError::Response(status, _, _) => self.provider_error(format!(
                "answered the discovery request with HTTP {status}; check issuer_url"
            )),
            other => self.provider_error(format!("has an unusable discovery document: {other}")),
        }
    }

    /// Discovers the provider once; a failed discovery is tried again next time.
    async fn provider(&self) -> Result<Arc<Provider>, OidcError> {
        let mut slot = self.provider.lock().await;
        if let Some(p) = slot.as_ref() {
            return Ok(p.clone());
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| self.discovery_error(e))?;
        let keys = metadata.jwks().clone();
        let provider = Arc::new(Provider {
            metadata,
            keys: RwLock::new(keys),
            refetch: tokio::sync::Mutex::new(()),
        });
        *slot = Some(provider.clone());
        Ok(provider)
    }

    fn client(&self, provider: &Provider) -> OidcClient {
        let client: OidcClient = Client::from_provider_metadata(
            provider.metadata.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
        );
        client.set_redirect_uri(self.redirect.clone())
    }

    /// Starts a login: the URL to send the browser to, and what to keep.
    pub async fn begin(&self) -> Result<(String, OidcPending), OidcError> {
        let provider = self.provider().await?;
        let client = self.client(&provider);
        let (challenge, pkce) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scopes(self.scopes.iter().cloned())
            .set_pkce_challenge(challenge)
            .url();
        Ok((
            url.into(),
            OidcPending {
                state: state.secret().clone(),
                nonce,
                pkce,
            },
        ))
    }

    /// Finishes a login: exchanges the code (with the PKCE verifier), verifies
    /// the ID token and maps its claims.
    pub async fn finish(&self, code: String, pending: OidcPending) -> Result<OidcLogin, OidcError> {
        let provider = self.provider().await?;
        let client = self.client(&provider);
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|_| self.provider_error("advertises no token endpoint"))?
            .set_pkce_verifier(pending.pkce)
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::Request(inner) => self.unreachable("token request", &inner),
                RequestTokenError::ServerResponse(err) => self.provider_error(format!(
                    "refused the sign-in code: {}{}",
                    err.error(),
                    err.error_description()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                )),
                other => self.provider_error(format!("sent an unusable token response: {other}")),
            })?;
        let id_token = response.id_token().ok_or_else(|| {
            self.provider_error(
                "returned no ID token (is the openid scope allowed for this client?)",
            )
        })?;
        let claims = self
            .verify(
                &provider,
                id_token,
                &pending.nonce,
                Some(response.access_token()),
            )
            .await?;
        self.login_from(&claims)
    }

    /// Verifies an ID token, fetching the provider's keys again once when the
    /// token names a key the cache does not hold.
    pub async fn verify_id_token(
        &self,
        token: &OidcIdToken,
        nonce: &Nonce,
    ) -> Result<OidcLogin, OidcError> {
        let provider = self.provider().await?;
        let claims = self.verify(&provider, token, nonce, None).await?;
        self.login_from(&claims)
    }

    async fn verify(
        &self,
        provider: &Provider,
        token: &OidcIdToken,
        nonce: &Nonce,
        access_token: Option<&AccessToken>,
    ) -> Result<OidcClaims, OidcError> {
        let first = self.verify_with_cached_keys(provider, token, nonce, access_token);
        let result = match first {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                self.refetch_keys(provider).await?;
                self.verify_with_cached_keys(provider, token, nonce, access_token)
            }
            other => other,
        };
        result.map_err(|e| {
            tracing::info!(connector = %self.name, error = %e, "ID token refused");
            match e {
                ClaimsVerificationError::Expired(why) => OidcError::ClockSkew(why),
                other => OidcError::InvalidToken(other.to_string()),
            }
        })
    }

    async fn refetch_keys(&self, provider: &Provider) -> Result<(), OidcError> {
        let _one_at_a_time = provider.refetch.lock().await;
        let keys = CoreJsonWebKeySet::fetch_async(provider.metadata.jwks_uri(), &self.http)
            .await
            .map_err(|e| self.discovery_error(e))?;
        tracing::info!(connector = %self.name, keys = keys.keys().len(), "fetched the identity provider's signing keys again");
        *provider.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(())
    }

    fn verify_with_cached_keys(
        &self,
        provider: &Provider,
        token: &OidcIdToken,
        nonce: &Nonce,
        access_token: Option<&AccessToken>,
    ) -> Result<OidcClaims, ClaimsVerificationError> {
        let keys = provider
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let verifier = match &self.client_secret {
            Some(secret) => CoreIdTokenVerifier::new_confidential_client(
                self.client_id.clone(),
                secret.clone(),
                self.issuer.clone(),
                keys,
            ),
            None => CoreIdTokenVerifier::new_public_client(
                self.client_id.clone(),
                self.issuer.clone(),
                keys,
            ),
        };
        let leeway = chrono::Duration::from_std(CLOCK_LEEWAY).expect("small duration");
        let verifier = verifier
            .set_allowed_algs(
                provider
                    .metadata
                    .id_token_signing_alg_values_supported()
                    .iter()
                    .cloned(),
            )
            // A token that expired less than the leeway ago still counts.
            .set_time_fn(move || Utc::now() - leeway)
            .set_issue_time_verifier_fn(move |issued| {
                let now = Utc::now();
                if issued > now + leeway {
                    Err(format!(
                        "was issued at {issued}, in the future of the gateway's clock ({now})"
                    ))
                } else {
                    Ok(())
                }
            });
        let claims = token.claims(&verifier, nonce)?.clone();
        // The access token is not used, but a mismatching hash means the
        // token response was tampered with.
        if let (Some(expected), Some(access_token)) = (claims.access_token_hash(), access_token) {
            let alg = token
                .signing_alg()
                .map_err(ClaimsVerificationError::SignatureVerification)?;
            let key = token
                .signing_key(&verifier)
                .map_err(ClaimsVerificationError::SignatureVerification)?;
            let actual = AccessTokenHash::from_token(access_token, alg, key)
                .map_err(|e| ClaimsVerificationError::Other(e.to_string()))?;
            if actual != *expected {
                return Err(ClaimsVerificationError::Other(
                    "the access token does not match the ID token's at_hash".into(),
                ));
            }
        }
        Ok(claims)
    }

    fn login_from(&self, claims: &OidcClaims) -> Result<OidcLogin, OidcError> {
        let value = serde_json::to_value(claims)
            .map_err(|e| OidcError::InvalidToken(format!("unreadable claims: {e}")))?;
        let flat = flatten_claims(&value);
        let username = self.username(&flat)?;
        let roles = self.roles_for(&flat);
        Ok(OidcLogin {
            username,
            roles,
            claims: flat,
        })
    }

    /// The Postern username: the first usable value of `username_claim`, or
    /// of `preferred_username`, `email`, `sub` in that order.
    ///
    /// `email` counts only with `email_verified: true`: many providers let a
    /// person type any address into their profile, and an unverified
    /// `boss@corp.example` must not become the boss's Postern identity.
    fn username(&self, claims: &BTreeMap<String, Vec<String>>) -> Result<String, OidcError> {
        let candidates: Vec<&str> = match &self.username_claim {
            Some(claim) => vec![claim.as_str()],
            None => DEFAULT_USERNAME_CLAIMS.to_vec(),
        };
        let email_verified = claims
            .get(EMAIL_VERIFIED)
            .is_some_and(|values| values.iter().any(|v| v == "true"));
        candidates
            .iter()
            .filter(|claim| **claim != EMAIL || email_verified)
            .filter_map(|claim| claims.get(*claim)?.first())
            .map(|v| v.trim())
            .find(|v| valid_username(v))
            .map(str::to_owned)
            .ok_or_else(|| {
                let tried: Vec<String> = candidates
                    .iter()
                    .map(|claim| match *claim {
                        EMAIL => format!("{EMAIL} claim (with {EMAIL_VERIFIED}: true)"),
                        other => format!("{other} claim"),
                    })
                    .collect();
                OidcError::NoUsername(tried.join(" or "))
            })
    }

    /// The roles `claims_to_roles` grants for these (flattened) claims.
    fn roles_for(&self, claims: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let mut roles = BTreeSet::new();
        for rule in &self.rules {
            let values = claims.get(&rule.claim).map(Vec::as_slice).unwrap_or(&[]);
            if values.iter().any(|v| rule.value.matches(v)) {
                roles.extend(rule.roles.iter().cloned());
            }
        }
        roles.into_iter().collect()
    }

    /// "your identity provider groups [a, b] map to no Postern role": the
    /// values of the claims `claims_to_roles` looks at.
    pub fn no_role_message(&self, claims: &BTreeMap<String, Vec<String>>) -> String {
        let parts: Vec<String> = self
            .mapped_claims()
            .into_iter()
            .map(|claim| {
                let values = claims.get(claim).map(Vec::as_slice).unwrap_or(&[]);
                format!("{claim} [{}]", values.join(", "))
            })
            .collect();
        if parts.is_empty() {
            return "this gateway maps no identity provider claims to Postern roles \
                    (its connector has no claims_to_roles); ask an administrator"
                .into();
        }
        format!(
            "your identity provider {} map to no Postern role; ask an administrator to \
             grant you access",
            parts.join(" and ")
        )
    }
}

fn valid_username(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

/// The HTTP client for one provider: public web roots (or the configured CA),
/// no redirects (they would open the gateway to SSRF), bounded waits.
fn http_client(ca_pem: Option<&str>) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs = crate::ca::pem_certs(pem).map_err(|e| e.to_string())?;
            if certs.is_empty() {
                return Err("ca_cert_file holds no certificate".into());
            }
            for cert in certs {
                roots.add(cert).map_err(|e| e.to_string())?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let tls = rustls::ClientConfig::builder_with_provider(postern_api::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(PROVIDER_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())
}

/// Turns claims into traits: strings, numbers and booleans become one value,
/// arrays of them several, nested objects are flattened with `.`
/// (`address.country`); nulls, objects inside arrays and the token's own
/// bookkeeping (`exp`, `nonce`, ...) are left out.
pub fn flatten_claims(claims: &Value) -> BTreeMap<String, Vec<String>> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Vec<String>>) {
        match value {
            Value::Null => {}
            Value::Object(map) => {
                for (k, v) in map {
                    walk(&format!("{prefix}{k}."), v, out);
                }
            }
            Value::Array(items) => {
                let key = prefix.trim_end_matches('.').to_owned();
                let entry = out.entry(key).or_default();
                entry.extend(items.iter().filter_map(scalar));
            }
            other => {
                let key = prefix.trim_end_matches('.').to_owned();
                out.entry(key).or_default().extend(scalar(other));
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Value::Object(map) = claims {
        for (k, v) in map {
            if !TOKEN_MECHANICS.contains(&k.as_str()) {
                walk(&format!("{k}."), v, &mut out);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
