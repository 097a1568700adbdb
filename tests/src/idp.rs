//! A real OpenID Connect provider for the single sign-on tests, and a
//! scripted browser that goes through its pages.
//!
//! [`Idp`] runs `node tests/idp/server.js` (oidc-provider, installed by
//! `scripts/install-test-deps`) on a loopback port with one confidential
//! client and the accounts given; the process is killed on drop.
//!
//! [`Browser`] is what a person does in the browser, over HTTP: it follows
//! redirects by hand (so it can stop at the client's loopback listener),
//! keeps the provider's cookies, fills in the provider's login form with a
//! user and password, and answers its consent page. Nothing is skipped: the
//! gateway only sees what a real provider sent.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use url::Url;

/// One account at the provider.
pub struct Account {
    /// Login name (also `sub` and `preferred_username`).
    pub name: &'static str,
    /// Password on the login page.
    pub password: &'static str,
    /// More claims, e.g. `{"groups": ["dba"]}`.
    pub claims: Value,
}

/// A provider about to start: its port and client are chosen first, so the
/// gateway's configuration can name them before the gateway (whose port is
/// in the client's redirect URI) starts.
pub struct IdpPlan {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The gateway's client ID there.
    pub client_id: String,
    client_secret: String,
    dir: tempfile::TempDir,
}

impl Default for IdpPlan {
    fn default() -> Self {
        Self::new()
    }
}

impl IdpPlan {
    /// Picks a free port and a client secret.
    pub fn new() -> IdpPlan {
        let dir = tempfile::Builder::new()
            .prefix("postern-idp-")
            .tempdir()
            .expect("idp dir");
        let client_secret = format!("secret-{:x}", rand_u64());
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, &client_secret).expect("write client secret");
        IdpPlan {
            port: crate::free_port(),
            client_id: "postern-gateway".into(),
            client_secret,
            dir,
        }
    }

    /// The issuer URL.
    pub fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A `connectors:` block for `gateway.yaml` naming this provider, with
    /// these `claims_to_roles` entries (YAML flow mappings).
    pub fn connector_yaml(&self, name: &str, claims_to_roles: &[&str]) -> String {
        let mut yaml = format!(
            "connectors:\n  - name: {name}\n    type: oidc\n    issuer_url: {}\n    client_id: {}\n    client_secret_file: {}\n    scopes: [openid, profile, email, groups, db]\n    claims_to_roles:\n",
            self.issuer(),
            self.client_id,
            self.dir.path().join("client-secret").display(),
        );
        for rule in claims_to_roles {
            yaml.push_str(&format!("      - {rule}\n"));
        }
        yaml
    }

    /// Starts the provider for a client that may redirect to
    /// `redirect_uris`, and waits until it listens.
    pub async fn start(self, redirect_uris: &[String], accounts: &[Account]) -> Idp {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("idp");
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "{} has no node_modules: run scripts/install-test-deps",
            dir.display()
        );
        let accounts: serde_json::Map<String, Value> = accounts
            .iter()
            .map(|a| {
                (
                    a.name.to_owned(),
                    serde_json::json!({ "password": a.password, "claims": a.claims }),
                )
            })
            .collect();
        let mut child = Command::new("node")
            .arg(dir.join("server.js"))
            .current_dir(&dir)
            .env("IDP_PORT", self.port.to_string())
            .env("IDP_CLIENT_ID", &self.client_id)
            .env("IDP_CLIENT_SECRET", &self.client_secret)
            .env("IDP_REDIRECT_URIS", redirect_uris.join(","))
            .env("IDP_ACCOUNTS", Value::Object(accounts).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start node tests/idp/server.js (is Node.js installed?)");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == "ready" {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if !ready {
            let _ = child.start_kill();
            let out = child.wait_with_output().await.expect("idp output");
            panic!(
                "the test identity provider did not start: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(_)) = lines.next_line().await {}
            });
        }
        Idp {
            port: self.port,
            _plan: self,
            _child: child,
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

/// A running provider; killed on drop.
pub struct Idp {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _plan: IdpPlan,
    _child: Child,
}

/// What to answer on the provider's consent page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consent {
    /// Allow.
    Allow,
    /// Deny.
    Deny,
}

/// A scripted browser: cookies, manual redirects, the provider's forms.
pub struct Browser {
    http: reqwest::Client,
    idp_port: u16,
    /// Requests to the first port go to the second (see [`Browser::detouring`]).
    detour: Option<(u16, u16)>,
}

/// A page the browser stopped at.
#[derive(Clone, Debug)]
pub struct Page {
    /// Its address.
    pub url: Url,
    /// Its HTTP status.
    pub status: u16,
    /// Its HTML.
    pub body: String,
}

impl Page {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The text of the element with this `id` (e.g. `hostname` on the
    /// gateway's approval page), unescaped and without inner tags.
    pub fn element(&self, id: &str) -> Option<String> {
        let re = Regex::new(&format!(r#"(?s)id="{id}"[^>]*>(.*?)</"#)).expect("regex");
        let inner = re.captures(&self.body)?[1].to_owned();
        let tags = Regex::new(r"<[^>]*>").expect("regex");
        Some(unescape(&tags.replace_all(&inner, "")))
    }
}

/// Where a walk through redirects stopped.
enum Stop {
    /// At a loopback listener (not visited).
    Listener(Url),
    /// At a page with no form the browser knows to fill.
    Page(Page),
}

/// An HTML form: where it posts and its hidden fields.
struct Form {
    action: String,
    fields: Vec<(String, String)>,
}

/// A TLS client configuration that trusts `ca_pem` (the gateway's host CA)
/// and no other, for HTTP clients of the gateway's API.
pub fn trusting(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in postern_gateway::ca::pem_certs(ca_pem).expect("gateway CA PEM") {
        roots.add(cert).expect("gateway CA");
    }
    rustls::ClientConfig::builder_with_provider(postern_api::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

impl Browser {
    /// A browser that trusts `gateway_ca_pem` for the gateway's pages (a
    /// person would have installed the gateway's certificate, or the gateway
    /// would have a public one).
    pub fn new(idp: &Idp, gateway_ca_pem: &str) -> Browser {
        let tls = trusting(gateway_ca_pem);
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        Browser {
            http,
            idp_port: idp.port,
            detour: None,
        }
    }

    /// A browser whose requests to loopback port `from` go to port `to`
    /// instead, as a load balancer in front of gateway replicas may send a
    /// browser to another replica than the one its sign-in started on.
    pub fn detouring(mut self, from: u16, to: u16) -> Browser {
        self.detour = Some((from, to));
        self
    }

    /// The underlying client (e.g. to visit a gateway URL directly).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Goes to `auth_url`, signs in as `user`/`password`, answers the
    /// consent page, and follows the redirects through the gateway until the
    /// browser is sent to a loopback listener that is not the provider: the
    /// client's. Returns that address without visiting it. An error carries
    /// the page where the journey stopped.
    pub async fn sign_in(
        &self,
        auth_url: &str,
        user: &str,
        password: &str,
        consent: Consent,
    ) -> Result<Url, String> {
        let start = Url::parse(auth_url).map_err(|e| e.to_string())?;
        match self.walk(start, None, user, password, consent).await? {
            Stop::Listener(url) => Ok(url),
            Stop::Page(page) if !page.is_success() => Err(format!(
                "{} answered {}: {}",
                page.url, page.status, page.body
            )),
            Stop::Page(page) => Err(format!(
                "{}: a page without a form to fill: {}",
                page.url, page.body
            )),
        }
    }

    /// A device sign-in from the person's side: enters `user_code` on the
    /// gateway's page at `verification_uri`, signs in at the provider as
    /// `user`/`password`, answers its consent page, and stops at the first
    /// page of the gateway that is not a redirect: the one asking to approve
    /// the machine, or a refusal.
    pub async fn enter_device_code(
        &self,
        verification_uri: &str,
        user_code: &str,
        user: &str,
        password: &str,
        consent: Consent,
    ) -> Result<Page, String> {
        let start = Url::parse(verification_uri).map_err(|e| e.to_string())?;
        let fields = vec![("user_code".to_owned(), user_code.to_owned())];
        match self
            .walk(start, Some(fields), user, password, consent)
            .await?
        {
            Stop::Page(page) => Ok(page),
            Stop::Listener(url) => Err(format!("sent to a loopback listener: {url}")),
        }
    }

    /// Presses the button of the form `form_id` (with its hidden fields) on
    /// `page`, e.g. `approve` or `deny`; returns the page it leads to.
    pub async fn press(&self, page: &Page, form_id: &str) -> Result<Page, String> {
        let form = find_form(&page.body, form_id)
            .ok_or_else(|| format!("{}: no form {form_id:?}: {}", page.url, page.body))?;
        let target = page.url.join(&form.action).map_err(|e| e.to_string())?;
        let resp = self
            .http
            .post(target.clone())
            .form(&form.fields)
            .send()
            .await
            .map_err(|e| format!("{target}: {e}"))?;
        Ok(Page {
            url: target,
            status: resp.status().as_u16(),
            body: resp.text().await.unwrap_or_default(),
        })
    }

    /// Follows redirects from `next` (posting `form_post` there first),
    /// filling in the provider's login and consent forms, until a loopback
    /// listener or a page with neither form.
    async fn walk(
        &self,
        mut next: Url,
        mut form_post: Option<Vec<(String, String)>>,
        user: &str,
        password: &str,
        consent: Consent,
    ) -> Result<Stop, String> {
        for _ in 0..30 {
            if self.is_client_listener(&next) {
                return Ok(Stop::Listener(next));
            }
            if let Some((from, to)) = self.detour
                && next.port() == Some(from)
            {
                next.set_port(Some(to))
                    .map_err(|()| format!("{next}: no port"))?;
            }
            let request = match form_post.take() {
                Some(fields) => self.http.post(next.clone()).form(&fields),
                None => self.http.get(next.clone()),
            };
            let resp = request.send().await.map_err(|e| format!("{next}: {e}"))?;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| format!("{next}: redirect without Location"))?;
                next = next.join(location).map_err(|e| e.to_string())?;
                continue;
            }
            let body = resp.text().await.unwrap_or_default();
            let page = Page {
                url: next.clone(),
                status: status.as_u16(),
                body,
            };
            if !status.is_success() {
                return Ok(Stop::Page(page));
            }
            let (form, mut fields) = if let Some(form) = find_form(&page.body, "login") {
                let fields = vec![
                    ("login".to_owned(), user.to_owned()),
                    ("password".to_owned(), password.to_owned()),
                ];
                (form, fields)
            } else if let Some(form) = find_form(
                &page.body,
                match consent {
                    Consent::Allow => "consent",
                    Consent::Deny => "deny",
                },
            ) {
                (form, Vec::new())
            } else {
                return Ok(Stop::Page(page));
            };
            fields.extend(form.fields);
            next = next.join(&form.action).map_err(|e| e.to_string())?;
            form_post = Some(fields);
        }
        Err("too many redirects".into())
    }

    fn is_client_listener(&self, url: &Url) -> bool {
        url.scheme() == "http"
            && url.host_str() == Some("127.0.0.1")
            && url.port() != Some(self.idp_port)
    }
}

/// The form with this `id`, its action and hidden inputs.
fn find_form(html: &str, id: &str) -> Option<Form> {
    let form_re = Regex::new(r#"(?s)<form\s+([^>]*)>(.*?)</form>"#).expect("regex");
    let attr = |attrs: &str, name: &str| -> Option<String> {
        Regex::new(&format!(r#"\b{name}="([^"]*)""#))
            .expect("regex")
            .captures(attrs)
            .map(|c| unescape(&c[1]))
    };
    let input_re = Regex::new(r#"<input\s+([^>]*)>"#).expect("regex");
    form_re.captures_iter(html).find_map(|form| {
        let attrs = &form[1];
        if attr(attrs, "id").as_deref() != Some(id) {
            return None;
        }
        let fields = input_re
            .captures_iter(&form[2])
            .filter(|input| attr(&input[1], "type").as_deref() == Some("hidden"))
            .filter_map(|input| Some((attr(&input[1], "name")?, attr(&input[1], "value")?)))
            .collect();
        Some(Form {
            action: attr(attrs, "action")?,
            fields,
        })
    })
}

fn unescape(text: &str) -> String {
    let numeric = Regex::new(r"&#(\d+);").expect("regex");
    numeric
        .replace_all(text, |c: &regex::Captures| {
            c[1].parse::<u32>()
                .ok()
                .and_then(char::from_u32)
                .map(String::from)
                .unwrap_or_default()
        })
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Visits the client's loopback listener as the browser would, returning the
/// status and the page.
pub async fn visit(url: &Url) -> (u16, String) {
    // A plain client: the listener speaks HTTP on loopback.
    let tls = rustls::ClientConfig::builder_with_provider(postern_api::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(Arc::new(rustls::RootCertStore::empty()))
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client");
    let resp = match http.get(url.clone()).send().await {
        Ok(r) => r,
        Err(e) => return (0, format!("visit failed: {e:?}")),
    };
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_found_by_id_with_their_hidden_fields() {
        let html = r#"<form id="consent" method="post" action="/interaction/a&#45;b/confirm">
  <input type="hidden" name="uid" value="a&#45;b"><button>Allow</button></form>
<form id="deny" method="post" action="/interaction/x/abort"><input type="hidden" name="uid" value="x"></form>"#;
        let form = find_form(html, "consent").unwrap();
        assert_eq!(form.action, "/interaction/a-b/confirm");
        assert_eq!(form.fields, vec![("uid".to_owned(), "a-b".to_owned())]);
        assert_eq!(
            find_form(html, "deny").unwrap().action,
            "/interaction/x/abort"
        );
        assert!(find_form(html, "login").is_none());
    }
}
