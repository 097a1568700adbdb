//! Password logins against strangers: guessing is budgeted per user and per
//! source address, every failure looks the same and is audited, password
//! checks are bounded, and what strangers send is bounded.

use std::time::Duration;

use postern_api::wire::{LocalLoginRequest, SsoStartRequest, sso_challenge};
use postern_tests::eventually;
use postern_tests::idp::trusting;
use postern_tests::stack::{DEFAULT_ROLES, PASSWORD, Stack, StackConfig};
use serde_json::Value;

/// A short lockout, so the test sees it end.
const LIMITS: &str =
    "limits: { login: { max_failures: 5, lockout: 2s, per_source_per_minute: 30 } }";

fn client(stack: &Stack) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(trusting(&stack.gateway_ca_pem()))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

fn base(stack: &Stack) -> String {
    format!("https://localhost:{}", stack.gateway.addr.port())
}

/// One answer to a login: status, `Retry-After` and the body as sent.
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    body: String,
}

impl Answer {
    fn kind(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or_default();
        body["kind"].as_str().unwrap_or_default().to_owned()
    }
}

async fn login(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    totp: Option<&str>,
) -> Answer {
    let resp = http
        .post(format!("{base}/v1/login/local"))
        .json(&LocalLoginRequest {
            username: user.into(),
            password: password.into(),
            csr_pem: csr(),
            totp: totp.map(str::to_owned),
        })
        .send()
        .await
        .expect("login request");
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().expect("Retry-After in seconds"));
    Answer {
        status: resp.status().as_u16(),
        retry_after,
        body: resp.text().await.unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_locks_the_user_then_the_source() {
    let stack = Stack::start_with(
        DEFAULT_ROLES,
        StackConfig {
            gateway_extra: LIMITS,
            ..Default::default()
        },
    )
    .await;
    stack.add_user("alice", PASSWORD, &["dev"]);
    let http = client(&stack);
    let base = base(&stack);

    // Five wrong passwords in a row lock alice, even for the right one.
    for _ in 0..5 {
        let answer = login(&http, &base, "alice", "guess", None).await;
        assert_eq!(answer.status, 401, "{}", answer.body);
    }
    let locked = login(&http, &base, "alice", PASSWORD, None).await;
    assert_eq!(locked.status, 429, "{}", locked.body);
    assert_eq!(locked.kind(), "too_many_attempts");
    assert!(
        locked.retry_after.is_some_and(|s| (1..=2).contains(&s)),
        "Retry-After within the 2 s lockout: {:?}",
        locked.retry_after
    );

    // When the lockout ends, the right password works (refusals during the
    // lockout do not extend it).
    eventually(Duration::from_secs(20), async || {
        let answer = login(&http, &base, "alice", PASSWORD, None).await;
        if answer.status == 200 {
            return Ok(());
        }
        assert_eq!(answer.status, 429, "{}", answer.body);
        // Asks again when told to, as a client does: each refusal counts
        // against the source's budget below.
        let wait = answer.retry_after.expect("Retry-After");
        tokio::time::sleep(Duration::from_secs(wait)).await;
        Err(answer.status)
    })
    .await
    .unwrap_or_else(|e| panic!("alice is still locked out: {e}"));

    // The source address made 5 failures; 25 more, each for another name
    // (so no user is locked), use up its 30 a minute.
    for i in 0..25 {
        let answer = login(&http, &base, &format!("nobody-{i}"), "guess", None).await;
        assert_eq!(answer.status, 401, "attempt {i}: {}", answer.body);
    }
    let answer = login(&http, &base, "alice", PASSWORD, None).await;
    assert_eq!(answer.status, 429, "{}", answer.body);
    assert!(
        answer.retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "{:?}",
        answer.retry_after
    );

    // The CLI tells the person what happened and when to try again.
    let out = stack.try_login("alice", PASSWORD).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    println!("CLI: {stderr}");
    assert!(
        stderr.contains("too many failed logins; try again in"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_looks_alike_and_is_audited_briefly() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    let secret = stack.add_user_with_totp("carol", PASSWORD, &["dev"]);
    let http = client(&stack);
    let base = base(&stack);
    let now = postern_gateway::auth::totp::now_unix();
    let wrong_code = (0..10)
        .map(|d| d.to_string().repeat(6))
        .find(|c| {
            postern_gateway::auth::totp::check(&secret, c, now)
                .unwrap()
                .is_none()
        })
        .unwrap();

    let wrong_password = login(&http, &base, "carol", "guess", None).await;
    let no_code = login(&http, &base, "carol", PASSWORD, None).await;
    let bad_code = login(&http, &base, "carol", PASSWORD, Some(&wrong_code)).await;
    println!(
        "wrong password: {} {}",
        wrong_password.status, wrong_password.body
    );
    println!("no code:        {} {}", no_code.status, no_code.body);
    println!("wrong code:     {} {}", bad_code.status, bad_code.body);
    for answer in [&no_code, &bad_code] {
        assert_eq!(
            (answer.status, &answer.body),
            (wrong_password.status, &wrong_password.body),
            "a right password must not be told apart"
        );
    }
    assert_eq!(wrong_password.status, 401);

    // A huge username is refused, and audited cut short.
    let huge = "x".repeat(100_000);
    let answer = login(&http, &base, &huge, "guess", None).await;
    assert_eq!(answer.status, 401);
    let event = stack
        .wait_audit("login", |e| {
            e["success"] == false && e["user"].as_str().is_some_and(|u| u.starts_with("xxx"))
        })
        .await;
    let audited = event["user"].as_str().unwrap();
    println!("audited username: {} characters", audited.chars().count());
    assert!(audited.chars().count() <= 65, "{audited}");
    let event = stack
        .wait_audit("login", |e| e["success"] == false && e["user"] == "carol")
        .await;
    assert_eq!(event["method"], "local");

    // What single sign-on keeps from a stranger is bounded too.
    let start = |redirect: String, csr_pem: String| {
        http.post(format!("{base}/v1/login/sso/start"))
            .json(&SsoStartRequest {
                connector: "corp".into(),
                client_redirect: redirect,
                client_challenge: sso_challenge("verifier"),
                csr_pem,
            })
            .send()
    };
    let long_redirect = format!("http://127.0.0.1:9/{}", "a".repeat(10_000));
    let resp = start(long_redirect, csr()).await.unwrap();
    assert_eq!(resp.status(), 400);
    let resp = start("http://127.0.0.1:9/cb".into(), "A".repeat(100_000))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("csr_pem is longer than")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_checks_run_a_few_at_a_time() {
    let stack = Stack::start_with(
        DEFAULT_ROLES,
        StackConfig {
            gateway_extra: "limits: { login: { argon2_concurrency: 1, argon2_wait: 1ms, per_source_per_minute: 1000 } }",
            ..Default::default()
        },
    )
    .await;
    let base = base(&stack);
    // Connections are made first, so the logins arrive together.
    let mut clients = Vec::new();
    for _ in 0..12 {
        let http = client(&stack);
        http.get(format!("{base}/v1/ping")).send().await.unwrap();
        clients.push(http);
    }
    let mut burst = tokio::task::JoinSet::new();
    for (i, http) in clients.into_iter().enumerate() {
        let base = base.clone();
        burst.spawn(async move { login(&http, &base, &format!("u{i}"), "guess", None).await });
    }
    let answers = burst.join_all().await;
    let busy: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    println!(
        "statuses: {:?}",
        answers.iter().map(|a| a.status).collect::<Vec<_>>()
    );
    assert!(
        answers.iter().all(|a| a.status == 401 || a.status == 429),
        "only refusals"
    );
    assert!(
        !busy.is_empty(),
        "with one slot, a burst meets a busy gateway"
    );
    assert!(
        busy.iter().all(|a| a.retry_after.is_some()
            && a.body.contains("the gateway is busy checking other logins"))
    );
    assert!(answers.iter().any(|a| a.status == 401), "some were checked");
}
