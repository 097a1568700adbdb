//! The tunnel manager the desktop app is built on, against a real gateway
//! and PostgreSQL: several tunnels, live counters, guard, favourites.

use std::process::Stdio;
use std::time::Duration;

use postern_client::home::Home;
use postern_client::manager::{TunnelManager, TunnelRequest};
use postern_client::profile::profile_name_for;
use postern_client::queries::{GuardEvent, GuardPolicy};
use postern_tests::eventually;
use postern_tests::stack::{DEFAULT_ROLES, Stack, psql};

use postern_tests::stack::PASSWORD as PW;

fn request(stack: &Stack, db_user: &str) -> TunnelRequest {
    TunnelRequest {
        profile: profile_name_for(&stack.gateway_addr()),
        database: "pg".into(),
        db_user: Some(db_user.into()),
        db_name: Some("app".into()),
        db_roles: vec![],
        port: None,
        socket_dir: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_are_listed_with_live_counters_and_favourites_come_back() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);
    stack.login("alice", PW).await;
    let home = Home::at(stack.home("alice"));

    let (manager, _events) = TunnelManager::new(home.clone());
    let cert = manager.start(request(&stack, "certuser")).await.unwrap();
    let scram = manager.start(request(&stack, "scramuser")).await.unwrap();
    assert_ne!(cert.port, scram.port);
    // Asking again for the same tunnel returns it instead of failing on the port.
    assert_eq!(
        manager.start(request(&stack, "certuser")).await.unwrap().id,
        cert.id
    );

    let mut held = psql(cert.port, "");
    held.args(["-c", "select pg_sleep(2)"]);
    let held = held.spawn().unwrap();
    // Counted while psql is connected (its statement runs for 2 s).
    eventually(Duration::from_secs(2), async || {
        let live = manager.list().await;
        let t = live.iter().find(|t| t.id == cert.id).unwrap();
        if t.connections == 1 && t.bytes_in > 0 && t.bytes_out > 0 {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("one connection and its bytes are counted: {e}"));
    let live = manager.list().await;
    let t = live.iter().find(|t| t.id == cert.id).unwrap();
    assert_eq!(t.total_connections, 1, "{t:?}");
    assert!(held.wait_with_output().await.unwrap().status.success());

    manager.set_favourite(cert.id, true).await.unwrap();
    manager.stop_all().await;
    assert!(manager.list().await.is_empty());

    // A new manager (the app's next start) reopens the favourite on its port.
    let (again, _events) = TunnelManager::new(home);
    let restored = again.restore_favourites().await;
    assert_eq!(restored.len(), 1);
    let info = restored[0].1.as_ref().expect("favourite reopened");
    assert_eq!(info.port, cert.port);
    assert!(info.favourite);
    let mut q = psql(info.port, "");
    q.args(["-c", "select current_user"]);
    let out = q.output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "certuser");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_reports_through_the_manager() {
    let stack = Stack::start(DEFAULT_ROLES).await;
    stack.add_user("alice", PW, &["dev"]);
    stack.login("alice", PW).await;
    let (manager, mut events) = TunnelManager::new(Home::at(stack.home("alice")));
    let t = manager.start(request(&stack, "certuser")).await.unwrap();
    manager
        .set_guard(
            t.id,
            GuardPolicy {
                warn_after: None,
                cancel_after: Some(Duration::from_secs(2)),
            },
        )
        .await
        .unwrap();
    let mut long = psql(t.port, "");
    long.args(["-c", "select pg_sleep(30)"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let long = long.spawn().unwrap();
    let event = tokio::time::timeout(Duration::from_secs(15), events.recv())
        .await
        .expect("guard acts in time")
        .unwrap();
    assert_eq!(event.tunnel, t.id);
    assert!(
        matches!(event.event, GuardEvent::Cancelled(ref q) if q.query.contains("pg_sleep(30)"))
    );
    let out = long.wait_with_output().await.unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("canceling statement due to user request")
    );
    let listed = manager.list().await;
    assert_eq!(listed[0].cancel_after_secs, Some(2));
}
