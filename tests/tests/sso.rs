//! Single sign-on end to end: the real `postern` CLI, an in-process gateway
//! and a real OpenID Connect provider (oidc-provider), signed in through the
//! provider's own login and consent pages.

use std::process::Output;
use std::time::Duration;

use postern_api::wire::{SsoExchangeRequest, SsoStartRequest, sso_challenge};
use postern_tests::idp::{Account, Browser, Consent, Idp, IdpPlan, visit};
use postern_tests::stack::{DEFAULT_ROLES, Stack, StackConfig};
use serde_json::{Value, json};
use tokio::process::Child;

/// `dba` reaches the dev database as the db users the identity provider
/// lists in the `db_users` claim.
const DBA_ROLE: &str = r#"
---
kind: role
version: v7
metadata: { name: dba }
spec:
  allow:
    db_labels: { env: dev }
    db_users: ["{{external.db_users}}"]
    db_names: [app]
"#;

const DANA_PW: &str = "dana's password";

fn accounts() -> Vec<Account> {
    vec![
        Account {
            name: "dana",
            password: DANA_PW,
            claims: json!({ "groups": ["dba", "staff"], "db_users": ["certuser", "scramuser"] }),
        },
        Account {
            name: "nina",
            password: "nina's password",
            claims: json!({ "groups": ["sales", "marketing"] }),
        },
    ]
}

struct Sso {
    stack: Stack,
    idp: Idp,
    browser: Browser,
}

async fn start() -> Sso {
    let plan = IdpPlan::new();
    let connectors = plan.connector_yaml(
        "corp",
        &[
            "{ claim: groups, value: dba, roles: [dba] }",
            r#"{ claim: groups, value: "^eng-.*$", roles: [dev] }"#,
        ],
    );
    let roles = format!("{DEFAULT_ROLES}{DBA_ROLE}");
    let stack = Stack::start_with(
        &roles,
        StackConfig {
            gateway_extra: &connectors,
            ..Default::default()
        },
    )
    .await;
    let idp = plan.start(&[stack.sso_callback_url()], &accounts()).await;
    let browser = Browser::new(&idp, &stack.gateway_ca_pem());
    Sso {
        stack,
        idp,
        browser,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `postern login GATEWAY --sso ... --browser none` for `who`, until it
/// prints the identity provider's address.
async fn start_cli_login(stack: &Stack, who: &str, extra: &[&str]) -> (Child, String) {
    stack.clients().start_sso_login(who, extra).await
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("postern login finished in time")
        .expect("postern login output")
}

fn profiles_dir_is_empty(stack: &Stack, who: &str) -> bool {
    std::fs::read_dir(stack.home(who).join("profiles"))
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dba_signs_in_and_claims_feed_roles_and_templates() {
    let sso = start().await;
    let (child, auth_url) = start_cli_login(&sso.stack, "dana", &[]).await;
    assert!(
        auth_url.starts_with(&sso.idp_issuer()),
        "the browser goes to the identity provider: {auth_url}"
    );
    let landing = sso
        .browser
        .sign_in(&auth_url, "dana", DANA_PW, Consent::Allow)
        .await
        .expect("sign-in reaches the client");
    assert!(landing.query().unwrap_or("").contains("code="), "{landing}");
    let (status, page) = visit(&landing).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Signed in — you can close this tab"),
        "{page}"
    );
    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sso.stack.run("dana", &["status"], "").await;
    let status = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(status.contains("User:     dana"), "{status}");
    assert!(status.contains("Roles:    dba"), "{status}");
    assert!(
        status.contains("external.groups = dba, staff"),
        "claims become external traits: {status}"
    );
    assert!(status.contains(&sso.stack.gateway.ca_pin), "{status}");

    let out = sso.stack.run("dana", &["db", "ls", "-v"], "").await;
    let listing = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        listing.contains("[certuser, scramuser]"),
        "db_users from the claim via {{{{external.db_users}}}}: {listing}"
    );
    assert!(!listing.contains("pg-prod"), "{listing}");

    // The session works for a real tunnel.
    let proxy = sso
        .stack
        .proxy("dana", &["pg", "--db-user", "certuser", "--db-name", "app"])
        .await;
    let out = proxy
        .psql("")
        .args(["-c", "SELECT current_user"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim(),
        "certuser",
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_that_map_to_no_role_are_refused_in_plain_words() {
    let sso = start().await;
    let (child, auth_url) = start_cli_login(&sso.stack, "nina", &["corp"]).await;
    let landing = sso
        .browser
        .sign_in(&auth_url, "nina", "nina's password", Consent::Allow)
        .await
        .expect("the browser still lands at the client, with an error");
    let (status, page) = visit(&landing).await;
    let sentence = "your identity provider groups [sales, marketing] map to no Postern role";
    assert_eq!(status, 403, "{page}");
    assert!(page.contains(sentence), "{page}");
    let out = finish(child).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(sentence),
        "{}",
        text(&out.stderr)
    );
    assert!(
        profiles_dir_is_empty(&sso.stack, "nina"),
        "a refused login writes no profile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_consent_unknown_connector_and_timeout_are_explained() {
    let sso = start().await;

    let (child, auth_url) = start_cli_login(&sso.stack, "dana", &[]).await;
    let landing = sso
        .browser
        .sign_in(&auth_url, "dana", DANA_PW, Consent::Deny)
        .await
        .unwrap();
    visit(&landing).await;
    let out = finish(child).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the sign-in was declined at the identity provider"),
        "{}",
        text(&out.stderr)
    );

    let addr = sso.stack.gateway_addr();
    let pin = sso.stack.gateway.ca_pin.clone();
    // The gateway's CA is pinned as for a password login: first contact
    // without a pin or a terminal to ask on is refused, fingerprint shown.
    let out = sso
        .stack
        .run("dana", &["login", &addr, "--sso", "--browser", "none"], "")
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!("--ca-pin {pin}")),
        "{}",
        text(&out.stderr)
    );

    let out = sso
        .stack
        .run(
            "dana",
            &[
                "login",
                &addr,
                "--ca-pin",
                &pin,
                "--sso",
                "okta",
                "--browser",
                "none",
            ],
            "",
        )
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("there is no single sign-on connector \"okta\"; this gateway has: corp"),
        "{}",
        text(&out.stderr)
    );

    let out = sso
        .stack
        .run(
            "dana",
            &[
                "login",
                &addr,
                "--ca-pin",
                &pin,
                "--sso",
                "--browser",
                "none",
                "--timeout",
                "2s",
            ],
            "",
        )
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the sign-in was not completed within 2 seconds"),
        "{}",
        text(&out.stderr)
    );
    assert!(profiles_dir_is_empty(&sso.stack, "dana"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_identity_provider_is_named() {
    // The provider is configured but never started.
    let plan = IdpPlan::new();
    let connectors = plan.connector_yaml("corp", &["{ claim: groups, value: dba, roles: [dev] }"]);
    let stack = Stack::start_with(
        DEFAULT_ROLES,
        StackConfig {
            gateway_extra: &connectors,
            ..Default::default()
        },
    )
    .await;
    let addr = stack.gateway_addr();
    let pin = stack.gateway.ca_pin.clone();
    let out = stack
        .run(
            "dana",
            &[
                "login",
                &addr,
                "--ca-pin",
                &pin,
                "--sso",
                "--browser",
                "none",
            ],
            "",
        )
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(&format!(
            "the gateway cannot reach the identity provider at {}",
            plan.issuer()
        )),
        "{}",
        text(&out.stderr)
    );
}

/// The API as a client other than the CLI would use it: codes are single
/// use, belong to one login, and need the verifier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_time_codes_cannot_be_replayed_forged_or_stolen() {
    let sso = start().await;
    let base = format!("https://localhost:{}", sso.stack.gateway.addr.port());
    let http = sso.browser.http();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_pem = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let verifier = "a verifier only this client knows, long enough to be secret";

    // Only a loopback listener may receive the code.
    for redirect in [
        "https://evil.example.com/callback",
        "http://10.0.0.1:8080/cb",
    ] {
        let resp = http
            .post(format!("{base}/v1/login/sso/start"))
            .json(&SsoStartRequest {
                connector: "corp".into(),
                client_redirect: redirect.into(),
                client_challenge: sso_challenge(verifier),
                csr_pem: csr_pem.clone(),
            })
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{redirect}");
    }

    let started: Value = http
        .post(format!("{base}/v1/login/sso/start"))
        .json(&SsoStartRequest {
            connector: "corp".into(),
            client_redirect: "http://127.0.0.1:9/callback".into(),
            client_challenge: sso_challenge(verifier),
            csr_pem,
        })
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let request_id = started["request_id"].as_str().unwrap().to_owned();
    let landing = sso
        .browser
        .sign_in(
            started["auth_url"].as_str().unwrap(),
            "dana",
            DANA_PW,
            Consent::Allow,
        )
        .await
        .unwrap();
    assert_eq!(landing.port(), Some(9));
    let code = landing
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a one-time code");

    let exchange = |code: &str, verifier: &str| {
        http.post(format!("{base}/v1/login/sso/exchange"))
            .json(&SsoExchangeRequest {
                request_id: request_id.clone(),
                code: code.into(),
                verifier: verifier.into(),
            })
            .send()
    };
    let forged = exchange("made-up-code", verifier).await.unwrap();
    assert_eq!(forged.status(), 403);
    let stolen = exchange(&code, "someone else's verifier").await.unwrap();
    assert_eq!(stolen.status(), 403, "the code alone is worth nothing");
    let good = exchange(&code, verifier).await.unwrap();
    assert_eq!(good.status(), 200);
    let login: Value = good.json().await.unwrap();
    assert_eq!(login["identity"]["username"], "dana");
    assert_eq!(login["identity"]["roles"], json!(["dba"]));
    let replayed = exchange(&code, verifier).await.unwrap();
    assert_eq!(replayed.status(), 403);
    let err: Value = replayed.json().await.unwrap();
    assert_eq!(err["kind"], "login_expired", "{err}");

    // The provider's redirect back with a state the gateway never issued.
    let resp = http
        .get(format!(
            "{base}/v1/login/sso/callback?code=anything&state=forged-state"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(!resp.headers().contains_key("location"));
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("This sign-in link is not valid")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_two_profiles_one_current() {
    let sso = start().await;
    let second = sso.stack.start_second_gateway().await;
    let first_profile = sso.stack.gateway_addr().replace(':', "_");
    let second_addr = format!("127.0.0.1:{}", second.addr.port());
    let second_profile = second_addr.replace(':', "_");

    // Dana signs in to the first gateway with single sign-on...
    let (child, auth_url) = start_cli_login(&sso.stack, "dana", &[]).await;
    let landing = sso
        .browser
        .sign_in(&auth_url, "dana", DANA_PW, Consent::Allow)
        .await
        .unwrap();
    visit(&landing).await;
    assert!(finish(child).await.status.success());

    // ...and to the second as a local user.
    second
        .store
        .put_user(&postern_gateway::store::UserRecord {
            name: "dana-local".into(),
            password_hash: postern_gateway::auth::local::hash_password("local password").unwrap(),
            roles: vec!["dev".into()],
            traits: Default::default(),
            totp: None,
        })
        .unwrap();
    let out = sso
        .stack
        .run(
            "dana",
            &[
                "login",
                &second_addr,
                "--user",
                "dana-local",
                "--password-stdin",
                "--ca-pin",
                &second.ca_pin,
            ],
            "local password\n",
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = sso.stack.run("dana", &["profiles"], "").await;
    let list = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = |name: &str| {
        list.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("{name} missing: {list}"))
            .to_owned()
    };
    assert!(line(&first_profile).starts_with(' '), "{list}");
    assert!(line(&first_profile).contains("dana "), "{list}");
    assert!(
        line(&second_profile).starts_with('*'),
        "the last login is current: {list}"
    );
    assert!(line(&second_profile).contains("dana-local"), "{list}");

    let whoami = |out: Output| {
        let status = text(&out.stdout);
        status
            .lines()
            .find_map(|l| l.strip_prefix("User:     "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("{status}{}", text(&out.stderr)))
    };
    assert_eq!(
        whoami(sso.stack.run("dana", &["status"], "").await),
        "dana-local"
    );
    assert_eq!(
        whoami(
            sso.stack
                .run("dana", &["--profile", &first_profile, "status"], "")
                .await
        ),
        "dana"
    );
    let out = sso
        .stack
        .run("dana", &["profiles", "use", &first_profile], "")
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(whoami(sso.stack.run("dana", &["status"], "").await), "dana");
    let out = sso.stack.run("dana", &["db", "ls", "-v"], "").await;
    assert!(
        text(&out.stdout).contains("[certuser, scramuser]"),
        "{}",
        text(&out.stdout)
    );

    let out = sso
        .stack
        .run("dana", &["profiles", "use", "no-such-profile"], "")
        .await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("there is no profile \"no-such-profile\""),
        "{}",
        text(&out.stderr)
    );
    second.shutdown(Duration::from_secs(1)).await;
}

impl Sso {
    fn idp_issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.idp.port)
    }
}

/// A stranger cannot fill the gateway with pending sign-ins: one source
/// address keeps at most 20, and is then told when to come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_sign_ins_are_bounded_per_source() {
    let sso = start().await;
    let base = format!("https://localhost:{}", sso.stack.gateway.addr.port());
    let http = sso.browser.http();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr_pem = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let mut statuses = Vec::new();
    let mut last = None;
    for _ in 0..25 {
        let resp = http
            .post(format!("{base}/v1/login/sso/start"))
            .json(&SsoStartRequest {
                connector: "corp".into(),
                client_redirect: "http://127.0.0.1:9/callback".into(),
                client_challenge: sso_challenge("verifier"),
                csr_pem: csr_pem.clone(),
            })
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
        last = Some(resp);
    }
    println!("statuses: {statuses:?}");
    assert_eq!(statuses[..20], [200; 20]);
    assert_eq!(statuses[20..], [429; 5]);
    let last = last.unwrap();
    assert!(last.headers().contains_key("retry-after"));
    let body: Value = last.json().await.unwrap();
    assert_eq!(body["kind"], "too_many_attempts");
}
