//! Strangers cannot take the gateway from the people who are signed in:
//! thousands of idle connections, real gateway, real login and psql.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_tests::stack::{DEFAULT_ROLES, PASSWORD, Stack, StackConfig};
use rustls::pki_types::ServerName;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

const IDLE: usize = 5_000;

/// The limits under test: short, so idle strangers are seen closed quickly.
const LIMITS: &str = "limits: { handshake_timeout: 2s, http_connection_lifetime: 4s, max_unauthenticated: 256, max_unauthenticated_per_source: 32 }";

/// Opens a TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    socket.connect(to).await
}

/// A TLS connection without a client certificate that then sends nothing.
async fn idle_tls(
    config: &Arc<rustls::ClientConfig>,
    from: &str,
    to: SocketAddr,
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_from(from, to).await.ok()?;
    tokio_rustls::TlsConnector::from(config.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()
}

/// TLS to the gateway, trusting its CA, without a client certificate.
fn stranger_tls(stack: &Stack) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut stack.gateway_ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

fn raise_descriptor_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let want = Some(16_384u64.min(limit.maximum.unwrap_or(u64::MAX)));
    if limit.current < want {
        limit.current = want;
        setrlimit(Resource::Nofile, limit).expect("raise the descriptor limit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_idle_strangers_do_not_keep_people_out() {
    raise_descriptor_limit();
    let stack = Stack::start_with(
        DEFAULT_ROLES,
        StackConfig {
            gateway_extra: LIMITS,
            ..StackConfig::default()
        },
    )
    .await;
    stack.add_user("alice", PASSWORD, &["dev"]);
    let gateway = stack.gateway.addr;

    // 5,000 connections that never send a byte, from one address, and TLS
    // connections without a certificate that then idle, from another.
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        if let Ok(tcp) = connect_from("127.0.0.2", gateway).await {
            idle.push(tcp);
        }
    }
    let tls = stranger_tls(&stack);
    let mut idle_tls_conns = Vec::new();
    for _ in 0..200 {
        if let Some(tls) = idle_tls(&tls, "127.0.0.3", gateway).await {
            idle_tls_conns.push(tls);
        }
    }
    assert!(
        !idle_tls_conns.is_empty() && idle_tls_conns.len() <= 32,
        "one source gets its share of the strangers' budget, no more: {}",
        idle_tls_conns.len()
    );

    // Meanwhile a person logs in and works, within seconds.
    let started = Instant::now();
    stack.login("alice", PASSWORD).await;
    let proxy = stack
        .proxy(
            "alice",
            &["pg", "--db-user", "certuser", "--db-name", "app"],
        )
        .await;
    let (ok, out, err) = proxy.query("", "select count(*) from items").await;
    assert!(ok, "{err}");
    assert_eq!(out, "3");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "login and query took {:?}",
        started.elapsed()
    );

    // The strangers' idle connections are closed by the gateway.
    let deadline = Duration::from_secs(15);
    for mut tls in idle_tls_conns {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(deadline, tls.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "an idle TLS connection without a certificate is closed: {read:?}"
        );
    }
    // (Those that were let in get the plaintext refusal first.)
    for mut tcp in idle.drain(..100) {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(deadline, tcp.read_to_end(&mut rest)).await;
        assert!(read.is_ok(), "an idle TCP connection is closed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plain_password_goes_to_a_server_nobody_verified() {
    let stack = Stack::start_with(
        DEFAULT_ROLES,
        StackConfig {
            extra_databases: "- name: pg-unverified
  labels: { env: dev }
  uri: localhost:{port}
  tls: { mode: insecure }
  passwords:
    - { db_user: scramuser, password_file: scram.pw }
    - { db_user: md5user, password_file: md5.pw }",
            ..StackConfig::default()
        },
    )
    .await;
    stack.add_user("alice", PASSWORD, &["dev"]);
    stack.login("alice", PASSWORD).await;
    let proxy = stack
        .proxy("alice", &["pg-unverified", "--db-name", "app"])
        .await;

    let (ok, _, err) = proxy.query("user=md5user", "select 1").await;
    assert!(!ok);
    assert!(
        err.contains("never sends to a server whose certificate it does not verify"),
        "{err}"
    );
    // SCRAM reveals nothing a fake server could use: it still works.
    let (ok, out, err) = proxy.query("user=scramuser", "select current_user").await;
    assert!(ok, "{err}");
    assert_eq!(out, "scramuser");
}
