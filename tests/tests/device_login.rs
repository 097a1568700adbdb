//! Device sign-in (RFC 8628) end to end: the real `postern login --sso
//! --device`, an in-process gateway and a real OpenID Connect provider
//! (oidc-provider), with the person's side played by the scripted browser
//! on another "device". The protocol's refusals (wrong codes, codes used
//! twice, polling too fast, guessed device codes) are probed over raw HTTP.

use std::process::Output;
use std::time::Duration;

use postern_api::wire::{
    DeviceStartRequest, DeviceStartResponse, DeviceTokenError, DeviceTokenRequest, LoginResponse,
    device_error,
};
use postern_tests::idp::{Account, Browser, Consent, Idp, IdpPlan, Page};
use postern_tests::stack::{DEFAULT_ROLES, Stack, StackConfig};
use serde_json::json;
use tokio::process::Child;

/// `dba` reaches the dev database as `certuser`.
const DBA_ROLE: &str = r#"
---
kind: role
version: v7
metadata: { name: dba }
spec:
  allow:
    db_labels: { env: dev }
    db_users: [certuser]
    db_names: [app]
"#;

const DANA_PW: &str = "dana's password";

struct Device {
    stack: Stack,
    idp: Idp,
    browser: Browser,
}

/// A gateway whose device codes live `ttl` and are polled every second.
async fn start(ttl: &str) -> Device {
    let plan = IdpPlan::new();
    let connectors = plan.connector_yaml("corp", &["{ claim: groups, value: dba, roles: [dba] }"]);
    let extra =
        format!("{connectors}sso: {{ device_code_ttl: {ttl}, device_poll_interval: 1s }}\n");
    let roles = format!("{DEFAULT_ROLES}{DBA_ROLE}");
    let stack = Stack::start_with(
        &roles,
        StackConfig {
            gateway_extra: &extra,
            ..Default::default()
        },
    )
    .await;
    let accounts = [
        Account {
            name: "dana",
            password: DANA_PW,
            claims: json!({ "groups": ["dba"] }),
        },
        Account {
            name: "nina",
            password: "nina's password",
            claims: json!({ "groups": ["sales"] }),
        },
    ];
    let idp = plan.start(&[stack.sso_callback_url()], &accounts).await;
    let browser = Browser::new(&idp, &stack.gateway_ca_pem());
    Device {
        stack,
        idp,
        browser,
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn finish(child: Child) -> Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("postern login --sso --device ended in time")
        .expect("postern login output")
}

impl Device {
    fn api(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.stack.gateway.addr.port())
    }

    /// `POST /v1/login/device/start` by hand, with a fresh key's request.
    async fn start_raw(&self, csr_pem: &str) -> reqwest::Response {
        self.browser
            .http()
            .post(self.api("/v1/login/device/start"))
            .json(&DeviceStartRequest {
                connector: "corp".into(),
                csr_pem: csr_pem.into(),
                hostname: "probe-host".into(),
            })
            .send()
            .await
            .unwrap()
    }

    async fn started_raw(&self) -> DeviceStartResponse {
        let resp = self.start_raw(&csr()).await;
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// One poll by hand: the certificate, or the RFC 8628 refusal.
    async fn poll(&self, device_code: &str) -> Result<LoginResponse, DeviceTokenError> {
        let resp = self
            .browser
            .http()
            .post(self.api("/v1/login/device/token"))
            .json(&DeviceTokenRequest {
                device_code: device_code.into(),
            })
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            Ok(resp.json().await.unwrap())
        } else {
            assert_eq!(resp.status(), 400);
            Err(resp.json().await.unwrap())
        }
    }

    /// The person enters `code` and signs in as dana: the approval page.
    async fn approval_page(&self, uri: &str, code: &str) -> Page {
        let page = self
            .browser
            .enter_device_code(uri, code, "dana", DANA_PW, Consent::Allow)
            .await
            .expect("the browser reaches the gateway's page");
        assert_eq!(page.status, 200, "{}", page.body);
        page
    }
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_is_approved_from_another_device_and_reaches_the_database() {
    let device = start("2m").await;
    let (child, prompt) = device.stack.clients().start_device_login("dana", &[]).await;
    assert!(
        prompt.verification_uri.ends_with("/v1/login/device"),
        "{prompt:?}"
    );
    assert!(
        regex::Regex::new("^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$")
            .unwrap()
            .is_match(&prompt.user_code),
        "{prompt:?}"
    );

    // Typed in lower case without the dash, as people do.
    let typed = prompt.user_code.replace('-', "").to_lowercase();
    let page = device.approval_page(&prompt.verification_uri, &typed).await;
    assert_eq!(
        page.element("hostname").as_deref(),
        Some(prompt.hostname.as_str()),
        "both sides name the same machine"
    );
    assert_eq!(
        page.element("fingerprint").as_deref(),
        Some(prompt.fingerprint.as_str()),
        "both sides show the same key"
    );
    assert_eq!(page.element("username").as_deref(), Some("dana"));
    println!(
        "the approval page shows: machine {:?}, key {:?}, signed in as {:?}",
        page.element("hostname"),
        page.element("fingerprint"),
        page.element("username")
    );

    let approved = device.browser.press(&page, "approve").await.unwrap();
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert!(approved.body.contains("Approved"), "{}", approved.body);
    let replay = device.browser.press(&page, "approve").await.unwrap();
    assert_eq!(
        replay.status, 400,
        "an approval works once: {}",
        replay.body
    );

    let out = finish(child).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let event = device
        .stack
        .wait_audit("login", |e| e["method"] == "sso-device")
        .await;
    assert_eq!(
        (&event["user"], &event["success"]),
        (&json!("dana"), &json!(true))
    );

    let out = device.stack.run("dana", &["db", "ls"], "").await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    println!("postern db ls after the approval:\n{}", text(&out.stdout));
    let proxy = device
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
async fn a_denied_or_refused_sign_in_ends_the_cli_with_a_sentence() {
    let device = start("2m").await;

    let (child, prompt) = device.stack.clients().start_device_login("dana", &[]).await;
    let page = device
        .approval_page(&prompt.verification_uri, &prompt.user_code)
        .await;
    let again = device
        .browser
        .enter_device_code(
            &prompt.verification_uri,
            &prompt.user_code,
            "dana",
            DANA_PW,
            Consent::Allow,
        )
        .await
        .unwrap();
    assert_eq!(again.status, 409, "a code works once: {}", again.body);
    assert!(again.body.contains("already used"), "{}", again.body);
    let denied = device.browser.press(&page, "deny").await.unwrap();
    assert_eq!(denied.status, 403, "{}", denied.body);
    let out = finish(child).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("the sign-in was denied in the browser"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        std::fs::read_dir(device.stack.home("dana").join("profiles"))
            .map(|mut d| d.next().is_none())
            .unwrap_or(true),
        "a denied sign-in writes no profile"
    );
    device
        .stack
        .wait_audit("login", |e| {
            e["method"] == "sso-device" && e["user"] == "dana" && e["success"] == false
        })
        .await;

    // Groups that map to no role end the machine's wait at once too.
    let (child, prompt) = device.stack.clients().start_device_login("nina", &[]).await;
    let ninas_browser = Browser::new(&device.idp, &device.stack.gateway_ca_pem());
    let refused = ninas_browser
        .enter_device_code(
            &prompt.verification_uri,
            &prompt.user_code,
            "nina",
            "nina's password",
            Consent::Allow,
        )
        .await
        .unwrap();
    let sentence = "your identity provider groups [sales] map to no Postern role";
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains(sentence), "{}", refused.body);
    let out = finish(child).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(sentence),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_sign_in_without_terminal_or_display_points_to_device() {
    let device = start("2m").await;
    let gateway = device.stack.gateway_addr();
    let mut child = device
        .stack
        .postern("zoe")
        .args(["login", &gateway, "--ca-pin", &device.stack.gateway.ca_pin])
        .args(["--sso", "--browser", "none"])
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let hint = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("a line on stderr in time")
        .unwrap()
        .unwrap_or_default();
    child.kill().await.unwrap();
    assert!(
        hint.contains(&format!(
            "run `postern login {gateway} --sso --device` instead"
        )),
        "{hint}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_ends_the_cli_with_a_sentence_not_a_hang() {
    let device = start("3s").await;
    let (child, prompt) = device.stack.clients().start_device_login("dana", &[]).await;
    assert!(prompt.user_code.len() == 9, "{prompt:?}");
    // Nobody enters the code: the CLI must give up on its own.
    let out = finish(child).await;
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains(
            "the sign-in code expired before anyone approved it; run `postern login --sso --device` again"
        ),
        "{}",
        text(&out.stderr)
    );
    let late = device
        .browser
        .enter_device_code(
            &prompt.verification_uri,
            &prompt.user_code,
            "dana",
            DANA_PW,
            Consent::Allow,
        )
        .await
        .unwrap();
    assert_eq!(
        late.status, 400,
        "an expired code is not valid: {}",
        late.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_fast_polls_and_bad_requests_are_refused() {
    let device = start("2m").await;

    // A request that does not parse is refused before anyone signs in.
    let resp = device
        .start_raw("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
        .await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("certificate request was refused"),
        "an unparsable CSR is refused at start"
    );

    // Polling sooner than the interval slows the device down by 5 s.
    let started = device.started_raw().await;
    assert_eq!(started.interval, 1);
    let first = device.poll(&started.device_code).await.unwrap_err();
    assert_eq!(first.error, device_error::AUTHORIZATION_PENDING);
    let fast = device.poll(&started.device_code).await.unwrap_err();
    assert_eq!(fast.error, device_error::SLOW_DOWN);
    assert_eq!(fast.interval, Some(6));

    // Someone else's (or a guessed) device code gets nothing, even once the
    // real one is approved.
    let page = device
        .approval_page(&started.verification_uri, &started.user_code)
        .await;
    device.browser.press(&page, "approve").await.unwrap();
    let other = device.started_raw().await;
    let stranger = device.poll(&other.device_code).await.unwrap_err();
    assert_eq!(stranger.error, device_error::AUTHORIZATION_PENDING);
    let guessed = device.poll(&"A".repeat(started.device_code.len())).await;
    assert_eq!(
        guessed.map(|_| ()).unwrap_err().error,
        device_error::EXPIRED_TOKEN
    );

    // Brute-forcing user codes hits the per-source budget.
    let mut refused_at = None;
    for attempt in 1..=40 {
        let resp = device
            .browser
            .http()
            .post(&started.verification_uri)
            .form(&[("user_code", "BBBB-BBBB")])
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            400 => {}
            429 => {
                let body = resp.text().await.unwrap();
                assert!(body.contains("too many failed logins"), "{body}");
                refused_at = Some(attempt);
                break;
            }
            other => panic!("a wrong code answered {other}"),
        }
    }
    assert_eq!(
        refused_at,
        Some(31),
        "30 wrong codes a minute, then a refusal"
    );
}
