//! Opening a tunnel, in process: every refusal the client can meet before
//! its session relays (bad route frames, hidden or denied databases,
//! revoked identities) and every way the database login can go, each with
//! the ErrorResponse the client reads and what the audit records.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use common::{Db, Gateway, Setup, Unreachable, alice, events, identity, message, route};
use postern_api::{Identity, RouteFrame};
use postern_gateway::revocation::add_lock;
use postern_pgwire::auth::md5_password;
use postern_pgwire::{ErrorFields, backend};

/// What the client reads for a session of `who` opened with the raw
/// `frame`, and the gateway's audit afterwards.
async fn refused_raw(
    setup: Setup,
    who: Option<Identity>,
    frame: &[u8],
    then_close: bool,
) -> (ErrorFields, Vec<serde_json::Value>) {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::with(dir.path(), setup);
    let (mut client, serving) = gateway.connect(who);
    client.send(frame).await;
    if then_close {
        client.close().await;
    }
    let fields = client.error().await;
    serving.await.unwrap();
    (fields, gateway.audit().await)
}

/// [`refused_raw`] for alice and a well-formed route frame.
async fn refused(setup: Setup, route: RouteFrame) -> (ErrorFields, Vec<serde_json::Value>) {
    refused_raw(setup, Some(alice()), &route.encode(), false).await
}

fn with_params(params: &[(&str, &str)]) -> RouteFrame {
    let params: BTreeMap<String, String> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RouteFrame::Session {
        database: "pg".into(),
        db_user: Some("app".into()),
        db_name: Some("shop".into()),
        db_roles: vec![],
        params,
    }
}

/// The one SessionRejected event of `audit`: its user and reason.
fn rejection(audit: &[serde_json::Value]) -> (String, String) {
    let rejected = events(audit, "session_rejected");
    assert_eq!(rejected.len(), 1, "{audit:?}");
    (
        rejected[0]["user"].as_str().unwrap().to_owned(),
        rejected[0]["reason"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn bad_route_frames_are_refused_before_anything_else() {
    const INVALID: &str = "postern: the tunnel sent an invalid request; update the postern client";
    let oversized = (64 * 1024 + 1u32).to_be_bytes().to_vec();
    let mut malformed = 9u32.to_be_bytes().to_vec();
    malformed.extend_from_slice(b"not json!");
    let mut unknown_kind = br#"{"kind":"shell"}"#.len().to_be_bytes()[4..].to_vec();
    unknown_kind.extend_from_slice(br#"{"kind":"shell"}"#);
    for (frame, what) in [
        (oversized, "oversized"),
        (malformed, "malformed"),
        (unknown_kind, "unknown kind"),
    ] {
        let (fields, audit) = refused_raw(Setup::default(), Some(alice()), &frame, false).await;
        assert_eq!(
            (
                fields.severity.as_str(),
                fields.code.as_str(),
                fields.message.as_str()
            ),
            ("FATAL", "08P01", INVALID),
            "{what}"
        );
        let rejected = events(&audit, "session_rejected");
        assert_eq!(
            rejected.len(),
            1,
            "{what}: the refusal is audited: {audit:?}"
        );
        assert_eq!(
            (rejected[0]["user"].as_str(), rejected[0]["reason"].as_str()),
            (Some("alice"), Some(INVALID)),
            "{what}"
        );
    }
    // A frame cut short by the client's close: the connection failed.
    let mut truncated = route("pg", "app", "shop").encode();
    truncated.truncate(10);
    let (fields, _) = refused_raw(Setup::default(), Some(alice()), &truncated, true).await;
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        ("08006", "postern: the connection failed")
    );
}

#[tokio::test]
async fn a_tunnel_without_a_certificate_is_told_to_log_in() {
    let frame = route("pg", "app", "shop").encode();
    let (fields, audit) = refused_raw(Setup::default(), None, &frame, false).await;
    assert_eq!(fields.code, "28000");
    assert_eq!(
        fields.message,
        "postern: no session certificate was presented; run `postern login`"
    );
    assert!(audit.is_empty(), "{audit:?}");
}

#[tokio::test]
async fn unknown_and_hidden_databases_get_the_same_answer() {
    const NO_DB: &str = "postern: database \"nope\" does not exist or your roles do not allow it";
    let (unknown, audit) = refused(Setup::default(), route("nope", "app", "shop")).await;
    assert_eq!(
        (unknown.code.as_str(), unknown.message.as_str()),
        ("3D000", NO_DB)
    );
    assert_eq!(
        unknown.hint.as_deref(),
        Some("run `postern db ls` to see the databases you may use")
    );
    assert_eq!(rejection(&audit), ("alice".to_owned(), NO_DB.to_owned()));

    // `pg` exists, but bob's roles do not show it: the same sentence.
    let mut bob = identity("bob", Duration::from_secs(3600));
    bob.roles = vec!["prod-only".into()];
    let frame = route("pg", "app", "shop").encode();
    let (hidden, audit) = refused_raw(Setup::default(), Some(bob), &frame, false).await;
    assert_eq!(hidden.code, "3D000");
    assert_eq!(
        hidden.message,
        NO_DB.replace("\"nope\"", "\"pg\""),
        "a hidden database reads like a missing one"
    );
    assert_eq!(hidden.hint, unknown.hint);
    assert_eq!(rejection(&audit).0, "bob");
}

#[tokio::test]
async fn denied_db_users_and_names_are_refused_with_what_the_roles_allow() {
    for (route, denied) in [
        (route("pg", "root", "shop"), "root"),
        (route("pg", "app", "secret"), "secret"),
    ] {
        let (fields, audit) = refused(Setup::default(), route).await;
        assert_eq!(fields.code, "28000", "{denied}");
        assert!(fields.message.starts_with("postern: "), "{fields:?}");
        assert!(fields.message.contains(denied), "{fields:?}");
        assert_eq!(
            fields.hint.as_deref(),
            Some("run `postern db ls -v` to see what your roles allow")
        );
        assert_eq!(rejection(&audit).1, fields.message);
    }
    let no_user = RouteFrame::Session {
        database: "pg".into(),
        db_user: None,
        db_name: None,
        db_roles: vec![],
        params: Default::default(),
    };
    let (fields, _) = refused(Setup::default(), no_user).await;
    assert_eq!(fields.code, "28000");
    assert!(fields.message.contains("--db-user"), "{fields:?}");
}

#[tokio::test]
async fn reserved_and_control_character_parameters_are_refused_and_audited() {
    let (reserved, audit) =
        refused(Setup::default(), with_params(&[("Database", "postgres")])).await;
    assert_eq!(reserved.code, "08P01");
    assert!(
        reserved.message.starts_with(
            "postern: startup parameter \"Database\" cannot be passed through the tunnel"
        ),
        "{reserved:?}"
    );
    assert_eq!(rejection(&audit).1, reserved.message);

    let (nul, audit) = refused(
        Setup::default(),
        with_params(&[("application_name", "a\0b")]),
    )
    .await;
    assert_eq!(nul.code, "08P01");
    assert_eq!(
        nul.message,
        "postern: the startup parameter \"application_name\" of the request contains a control character, which is not allowed"
    );
    assert_eq!(rejection(&audit).1, nul.message);
}

#[tokio::test]
async fn expired_and_locked_identities_are_refused() {
    let expired = identity("alice", Duration::ZERO);
    let frame = route("pg", "app", "shop").encode();
    let (fields, audit) = refused_raw(Setup::default(), Some(expired), &frame, false).await;
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        (
            "28000",
            "postern: your Postern session expired; log in again"
        )
    );
    assert_eq!(fields.hint.as_deref(), Some("run `postern login`"));
    assert_eq!(rejection(&audit).1, fields.message);

    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::start(dir.path());
    add_lock(
        gateway.store.as_ref(),
        "alice",
        None,
        Some("incident 42".into()),
    )
    .unwrap();
    let (mut client, serving) = gateway.connect(Some(alice()));
    client.send(&frame).await;
    let fields = client.error().await;
    serving.await.unwrap();
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        (
            "28000",
            "postern: access was locked by an administrator: incident 42"
        )
    );
    assert_eq!(
        fields.hint.as_deref(),
        Some("ask an administrator (`postern-gateway locks ls`)")
    );
    assert!(
        gateway.dials.try_recv().is_err(),
        "the database is never dialed"
    );
    let audit = gateway.audit().await;
    assert_eq!(rejection(&audit).1, fields.message);
}

/// A gateway that holds password `hunter2` for db user `app`.
fn with_password(dir: &std::path::Path) -> Setup {
    let file = dir.join("app.password");
    std::fs::write(&file, "hunter2\n").unwrap();
    Setup {
        database: format!(
            "uri: db.test:5432\npasswords: [{{ db_user: app, password_file: {} }}]\n",
            file.display()
        ),
        ..Setup::default()
    }
}

/// Asks for a password with `request`, and returns the PasswordMessage's text.
async fn ask_password(db: &mut Db, request: &[u8]) -> String {
    db.send(&message(b'R', request)).await;
    let answer = db.raw().await;
    assert_eq!(answer[0], b'p', "a PasswordMessage");
    let text = &answer[5..answer.len() - 1];
    String::from_utf8(text.to_vec()).unwrap()
}

#[tokio::test]
async fn cleartext_and_md5_passwords_log_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::with(dir.path(), with_password(dir.path()));

    let (mut client, mut db) = gateway.open(alice(), route("pg", "app", "shop")).await;
    db.startup().await;
    assert_eq!(ask_password(&mut db, &3i32.to_be_bytes()).await, "hunter2");
    db.accept(1, 2).await;
    assert_eq!(client.greeting().await.messages.len(), 4);

    let (mut client, mut db) = gateway.open(alice(), route("pg", "app", "shop")).await;
    db.startup().await;
    let salt = [1, 2, 3, 4];
    let mut request = 5i32.to_be_bytes().to_vec();
    request.extend_from_slice(&salt);
    assert_eq!(
        ask_password(&mut db, &request).await,
        md5_password("app", "hunter2", salt)
    );
    db.accept(1, 2).await;
    assert_eq!(client.greeting().await.messages.len(), 4);
}

/// The client's error when the database does `script` during login.
async fn login_fails<F, Fut>(setup: Setup, script: F) -> (ErrorFields, Vec<serde_json::Value>)
where
    F: FnOnce(Db) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let dir = tempfile::tempdir().unwrap();
    let mut gateway = Gateway::with(dir.path(), setup);
    let (mut client, mut db) = gateway.open(alice(), route("pg", "app", "shop")).await;
    db.startup().await;
    script(db).await;
    let fields = client.error().await;
    drop(client);
    (fields, gateway.audit().await)
}

#[tokio::test]
async fn a_database_refusal_reaches_the_client_in_its_words() {
    for code in ["28P01", "28000"] {
        let refusal = ErrorFields::fatal(code, "password authentication failed for user \"app\"");
        let (fields, audit) =
            login_fails(
                Setup::default(),
                |db| async move { db.refuse(&refusal).await },
            )
            .await;
        assert_eq!(fields.code, code);
        assert_eq!(
            fields.message,
            "postern: the database refused the login: password authentication failed for user \"app\""
        );
        assert_eq!(rejection(&audit).1, fields.message);
    }
}

#[tokio::test]
async fn a_password_the_gateway_does_not_hold_is_explained() {
    let (fields, _) = login_fails(Setup::default(), |mut db| async move {
        db.send(&message(b'R', &3i32.to_be_bytes())).await;
    })
    .await;
    assert_eq!(fields.code, "28000");
    assert_eq!(
        fields.message,
        "postern: the gateway holds no credentials for db user \"app\" on database \"pg\""
    );
}

#[tokio::test]
async fn a_password_is_never_sent_to_an_unverified_database() {
    let dir = tempfile::tempdir().unwrap();
    let mut setup = with_password(dir.path());
    setup.database.push_str("tls: { mode: insecure }\n");
    let (fields, _) = login_fails(setup, |mut db| async move {
        db.send(&message(b'R', &3i32.to_be_bytes())).await;
        assert!(db.closed().await, "no PasswordMessage is sent");
    })
    .await;
    assert_eq!(fields.code, "28000");
    assert!(
        fields.message.contains(
            "which the gateway never sends to a server whose certificate it does not verify"
        ),
        "{fields:?}"
    );
}

#[tokio::test]
async fn a_database_that_closes_mid_login_is_a_protocol_error() {
    let (fields, audit) = login_fails(Setup::default(), |mut db| async move {
        let mut out = BytesMut::new();
        backend::authentication_ok(&mut out);
        db.send(&out).await;
        db.close().await;
    })
    .await;
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        (
            "08P01",
            "postern: the database sent an unexpected reply during login"
        )
    );
    assert_eq!(rejection(&audit).1, fields.message);
}

#[tokio::test]
async fn an_unreachable_database_is_named_with_a_hint() {
    let setup = Setup {
        connector: Some(Arc::new(Unreachable)),
        ..Setup::default()
    };
    let (fields, audit) = refused(setup, route("pg", "app", "shop")).await;
    assert_eq!(
        (fields.code.as_str(), fields.message.as_str()),
        ("08001", "postern: the gateway cannot reach database \"pg\"")
    );
    assert_eq!(
        fields.hint.as_deref(),
        Some("the database may be down, or a firewall/security group blocks the gateway")
    );
    assert!(
        !fields.message.contains("db.test"),
        "no address for the client"
    );
    assert_eq!(rejection(&audit).1, fields.message);
}
