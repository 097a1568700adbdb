//! AWS on loopback for the Redshift Serverless and RDS tests (DESIGN.md §10).
//!
//! - [`Moto`]: the real `moto` server (PyPI, installed by
//!   `scripts/install-test-deps` into a venv in the cache) for AWS STS: it
//!   issues the temporary credentials of assumed roles.
//! - [`FakeAws`]: one HTTP endpoint the gateway is pointed at for both STS
//!   and Redshift Serverless (`aws.endpoints`). STS requests (Query protocol)
//!   go on to moto, except `AssumeRole` of roles the test denies, which get
//!   STS's `AccessDenied`; every STS request is recorded. moto has no
//!   Redshift Serverless, so this endpoint answers its JSON API itself
//!   (awsJson1_1, `X-Amz-Target: RedshiftServerless.*`): `GetWorkgroup`
//!   names the test PostgreSQL (which plays Redshift), `ListTagsForResource`
//!   gives tags, and `GetCredentials` — callable only with credentials of a
//!   role assumed through it, like the real one — creates or refreshes the
//!   login role `IAMR:<role name>` with a random password that expires with
//!   the credentials (`VALID UNTIL`).
//! - [`Blackhole`]: a listener that accepts and never answers.
//!
//! The `IAMR:` roles belong to the group [`crate::pg::IAM_GROUP`], which
//! `pg_hba.conf` lets log in with SCRAM over TLS.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::eventually;
use crate::pg::{IAM_GROUP, PgServer};

/// The AWS account of the fake Redshift Serverless.
pub const ACCOUNT: &str = "123456789012";
/// Its region.
pub const REGION: &str = "eu-central-1";
/// The workgroup it knows.
pub const WORKGROUP: &str = "analytics";
/// A workgroup whose endpoint is a [`Blackhole`] (see [`FakeAws::set_blackhole`]).
pub const BLACKHOLED_WORKGROUP: &str = "blackholed";
/// Tags of [`WORKGROUP`].
pub const TAGS: [(&str, &str); 2] = [("team", "data"), ("env", "from-aws-tag")];

/// `moto_server` for AWS STS, killed on drop.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers.
    /// Panics (never skips) when moto is not installed.
    pub async fn start() -> Moto {
        let venv = crate::cached_venv("POSTERN_MOTO_VENV", "moto-venv");
        let server = venv.join("bin/moto_server");
        assert!(
            server.exists(),
            "{server:?} is missing: run scripts/install-test-deps (or set POSTERN_MOTO_VENV)"
        );
        for _ in 0..5 {
            let port = crate::free_port();
            let mut child = Command::new(&server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start moto_server");
            let url = format!("http://127.0.0.1:{port}");
            let client = http_client();
            // `Ok(false)`: it exited, because the port was taken most likely.
            let answers = eventually(Duration::from_secs(30), async || {
                if let Ok(Some(_)) = child.try_wait() {
                    return Ok(false);
                }
                match client.get(format!("{url}/moto-api/")).send().await {
                    Ok(r) if r.status().is_success() => Ok(true),
                    Ok(r) => Err(r.status().to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .unwrap_or_else(|e| panic!("moto_server did not answer on {url}: {e}"));
            if answers {
                return Moto { child, url };
            }
        }
        panic!("moto_server did not start");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("HTTP client")
}

/// A loopback listener that accepts connections and never answers: an
/// endpoint behind a security group that drops traffic, as far as a client
/// with a timeout can tell.
pub struct Blackhole {
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Blackhole {
    /// Starts listening on 127.0.0.1.
    pub async fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        Blackhole { addr, task }
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One STS request as the fake saw it.
#[derive(Clone, Debug)]
pub struct StsCall {
    /// `AssumeRole`, `GetCallerIdentity`, ...
    pub action: String,
    /// `RoleArn`, for `AssumeRole`.
    pub role_arn: Option<String>,
    /// `ExternalId`, if sent.
    pub external_id: Option<String>,
    /// The access key that signed the request.
    pub access_key: Option<String>,
}

/// A `GetCredentials` call as the fake saw it.
#[derive(Clone, Debug)]
pub struct GetCredentialsCall {
    /// The role whose assumed credentials signed the call.
    pub role_arn: String,
    /// `dbName`.
    pub db_name: String,
    /// When the password it handed out stops working.
    pub expires: SystemTime,
}

#[derive(Default)]
struct Recorded {
    sts: Vec<StsCall>,
    get_credentials: Vec<GetCredentialsCall>,
    /// Access keys of assumed roles, to their role ARN.
    assumed: HashMap<String, String>,
    deny_assume: BTreeSet<String>,
    deny_get_credentials: BTreeSet<String>,
    blackhole: Option<SocketAddr>,
}

struct Shared {
    moto: String,
    pg_port: u16,
    pg: PgAdmin,
    lifetime: Duration,
    http: reqwest::Client,
    recorded: Mutex<Recorded>,
    /// Serializes role changes in PostgreSQL.
    pg_lock: tokio::sync::Mutex<()>,
}

/// How the fake reaches the test PostgreSQL as its superuser.
struct PgAdmin {
    socket_dir: PathBuf,
    port: u16,
    superuser: String,
}

/// STS (through moto) and Redshift Serverless on one loopback endpoint.
pub struct FakeAws {
    shared: Arc<Shared>,
    /// `http://127.0.0.1:PORT`, for `aws.endpoints.sts` and
    /// `aws.endpoints.redshift_serverless`.
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAws {
    /// Serves STS in front of `moto` and a Redshift Serverless whose
    /// database is `pg`; credentials from `GetCredentials` live `lifetime`.
    pub async fn start(moto: &Moto, pg: &PgServer, lifetime: Duration) -> FakeAws {
        let shared = Arc::new(Shared {
            moto: moto.url.clone(),
            pg_port: pg.port(),
            pg: PgAdmin {
                socket_dir: pg.socket_dir().to_owned(),
                port: pg.port(),
                superuser: pg.superuser().to_owned(),
            },
            lifetime,
            http: http_client(),
            recorded: Mutex::default(),
            pg_lock: tokio::sync::Mutex::new(()),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeAws { shared, url, task }
    }

    /// From now on, `AssumeRole` of `role_arn` is denied.
    pub fn deny_assume_role(&self, role_arn: &str) {
        self.recorded().deny_assume.insert(role_arn.to_owned());
    }

    /// From now on, `GetCredentials` as `role_arn` is denied.
    pub fn deny_get_credentials(&self, role_arn: &str) {
        self.recorded()
            .deny_get_credentials
            .insert(role_arn.to_owned());
    }

    /// The endpoint of [`BLACKHOLED_WORKGROUP`].
    pub fn set_blackhole(&self, addr: SocketAddr) {
        self.recorded().blackhole = Some(addr);
    }

    /// STS requests so far.
    pub fn sts_calls(&self) -> Vec<StsCall> {
        self.recorded().sts.clone()
    }

    /// `GetCredentials` calls so far.
    pub fn get_credentials_calls(&self) -> Vec<GetCredentialsCall> {
        self.recorded().get_credentials.clone()
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.shared.recorded.lock().unwrap()
    }
}

impl Drop for FakeAws {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The ARN of role `name` in [`ACCOUNT`].
pub fn role_arn(name: &str) -> String {
    format!("arn:aws:iam::{ACCOUNT}:role/{name}")
}

/// Creates `IAMR:<role>` in the test PostgreSQL as an administrator would
/// before the role's first login (`CREATE USER ... WITH PASSWORD DISABLE`)
/// and runs `grants` (SQL, `{user}` is the quoted user) in database `db`.
pub async fn create_iam_user(pg: &PgServer, role: &str, db: &str, grants: &[&str]) {
    let user = quote_ident(&format!("IAMR:{role}"));
    pg.admin("postgres")
        .await
        .batch_execute(&format!("CREATE ROLE {user} NOLOGIN IN ROLE {IAM_GROUP}"))
        .await
        .expect("create IAMR user");
    let client = pg.admin(db).await;
    for grant in grants {
        client
            .batch_execute(&grant.replace("{user}", &user))
            .await
            .unwrap_or_else(|e| panic!("{grant}: {e:?}"));
    }
}

/// Makes database `db` of the test PostgreSQL answer Redshift's query for
/// running statements (`SYS_QUERY_HISTORY`, `datediff`, `getdate`), as far
/// as `postern db queries` asks it: a user sees their own statements.
pub async fn create_sys_query_history(pg: &PgServer, db: &str) {
    pg.admin(db)
        .await
        .batch_execute(&format!(
            "CREATE FUNCTION getdate() RETURNS timestamp LANGUAGE sql \
                 AS 'SELECT clock_timestamp()::timestamp';
             -- Only the unit postern uses; the view has a column named like it.
             CREATE FUNCTION datediff(unit text, a timestamp, b timestamp) RETURNS bigint \
                 LANGUAGE sql AS 'SELECT (extract(epoch FROM b - a) * 1000000)::bigint';
             CREATE VIEW sys_query_history AS
                 SELECT pid AS session_id, usesysid AS user_id, datname AS database_name,
                        query_start::timestamp AS start_time, 'microsecond'::text AS microsecond,
                        CASE state WHEN 'active' THEN 'running' ELSE state END AS status,
                        query AS query_text
                 FROM pg_stat_activity
                 WHERE backend_type = 'client backend' AND usename = current_user;
             GRANT SELECT ON sys_query_history TO {IAM_GROUP};"
        ))
        .await
        .expect("create sys_query_history");
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let access_key = access_key(&headers);
    match target.as_deref() {
        Some(target) => match target.strip_prefix("RedshiftServerless.") {
            Some(operation) => redshift(&shared, operation, access_key, &body).await,
            None => json_error(StatusCode::BAD_REQUEST, "UnknownOperationException", target),
        },
        None => sts(&shared, &headers, access_key, body).await,
    }
}

/// The access key ID in a SigV4 `Authorization` header.
fn access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let credential = auth.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_owned())
}

async fn sts(
    shared: &Shared,
    headers: &HeaderMap,
    access_key: Option<String>,
    body: Bytes,
) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let call = StsCall {
        action: form.get("Action").cloned().unwrap_or_default(),
        role_arn: form.get("RoleArn").cloned(),
        external_id: form.get("ExternalId").cloned(),
        access_key,
    };
    let denied = call.action == "AssumeRole"
        && call
            .role_arn
            .as_ref()
            .is_some_and(|arn| shared.recorded.lock().unwrap().deny_assume.contains(arn));
    shared.recorded.lock().unwrap().sts.push(call.clone());
    if denied {
        let caller = format!("arn:aws:iam::{ACCOUNT}:user/postern-gateway");
        let message = format!(
            "User: {caller} is not authorized to perform: sts:AssumeRole on resource: {}",
            call.role_arn.as_deref().unwrap_or_default()
        );
        let xml = format!(
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
             <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>{message}</Message></Error>\
             <RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        );
        return (
            StatusCode::FORBIDDEN,
            [(header::CONTENT_TYPE, "text/xml")],
            xml,
        )
            .into_response();
    }
    let mut request = shared.http.post(&shared.moto).body(body.clone());
    for (name, value) in headers {
        if name != header::HOST && name != header::CONTENT_LENGTH {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
    let content_type = answer
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/xml")
        .to_owned();
    let text = answer.text().await.unwrap_or_default();
    if call.action == "AssumeRole"
        && status.is_success()
        && let (Some(key), Some(arn)) = (xml_value(&text, "AccessKeyId"), &call.role_arn)
    {
        shared
            .recorded
            .lock()
            .unwrap()
            .assumed
            .insert(key, arn.clone());
    }
    (status, [(header::CONTENT_TYPE, content_type)], text).into_response()
}

fn xml_value(xml: &str, tag: &str) -> Option<String> {
    let start = xml.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(xml[start..end].trim().to_owned())
}

fn json_error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        json!({ "__type": kind, "message": message }).to_string(),
    )
        .into_response()
}

fn json_ok(value: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
        value.to_string(),
    )
        .into_response()
}

fn epoch(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

async fn redshift(
    shared: &Shared,
    operation: &str,
    access_key: Option<String>,
    body: &[u8],
) -> Response {
    let input: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let workgroup = input["workgroupName"].as_str().unwrap_or_default();
    let arn_of = |name: &str| {
        format!("arn:aws:redshift-serverless:{REGION}:{ACCOUNT}:workgroup/{name}-0000")
    };
    match operation {
        "GetWorkgroup" => {
            let (address, port) = match workgroup {
                WORKGROUP => ("localhost".to_owned(), shared.pg_port),
                BLACKHOLED_WORKGROUP => match shared.recorded.lock().unwrap().blackhole {
                    Some(addr) => (addr.ip().to_string(), addr.port()),
                    None => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            "ResourceNotFoundException",
                            "no such workgroup",
                        );
                    }
                },
                _ => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "ResourceNotFoundException",
                        &format!("Workgroup {workgroup} not found."),
                    );
                }
            };
            json_ok(json!({
                "workgroup": {
                    "workgroupName": workgroup,
                    "workgroupArn": arn_of(workgroup),
                    "workgroupId": format!("{workgroup}-0000"),
                    "namespaceName": "default",
                    "status": "AVAILABLE",
                    "port": port,
                    "endpoint": { "address": address, "port": port },
                }
            }))
        }
        "ListTagsForResource" => {
            let tags: Vec<Value> = TAGS
                .iter()
                .map(|(k, v)| json!({ "key": k, "value": v }))
                .collect();
            json_ok(json!({ "tags": tags }))
        }
        "GetCredentials" => {
            let db_name = input["dbName"].as_str().unwrap_or("dev").to_owned();
            let role_arn = {
                let recorded = shared.recorded.lock().unwrap();
                let role = access_key
                    .as_ref()
                    .and_then(|key| recorded.assumed.get(key).cloned());
                match role {
                    Some(arn) if recorded.deny_get_credentials.contains(&arn) => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            "AccessDeniedException",
                            &format!(
                                "User: {arn} is not authorized to perform: redshift-serverless:GetCredentials on resource: {}",
                                arn_of(workgroup)
                            ),
                        );
                    }
                    Some(arn) => arn,
                    None => {
                        return json_error(
                            StatusCode::BAD_REQUEST,
                            "AccessDeniedException",
                            "the fake accepts only credentials of roles assumed through it",
                        );
                    }
                }
            };
            if workgroup != WORKGROUP && workgroup != BLACKHOLED_WORKGROUP {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "ResourceNotFoundException",
                    &format!("Workgroup {workgroup} not found."),
                );
            }
            let role = role_arn.rsplit('/').next().unwrap_or_default().to_owned();
            let user = format!("IAMR:{role}");
            let password = random_password();
            let expires = SystemTime::now() + shared.lifetime;
            if let Err(e) = shared.set_login(&user, &password, expires).await {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerException",
                    &e,
                );
            }
            shared
                .recorded
                .lock()
                .unwrap()
                .get_credentials
                .push(GetCredentialsCall {
                    role_arn,
                    db_name,
                    expires,
                });
            json_ok(json!({
                "dbUser": user,
                "dbPassword": password,
                "expiration": epoch(expires),
                "nextRefreshTime": epoch(expires),
            }))
        }
        other => json_error(
            StatusCode::BAD_REQUEST,
            "UnknownOperationException",
            &format!("the fake does not implement {other}"),
        ),
    }
}

impl Shared {
    /// Creates (like Redshift's automatic user creation) or refreshes the
    /// login of `user`: a new password, valid until `expires`.
    async fn set_login(
        &self,
        user: &str,
        password: &str,
        expires: SystemTime,
    ) -> Result<(), String> {
        let _one_at_a_time = self.pg_lock.lock().await;
        let mut config = tokio_postgres::Config::new();
        config
            .host_path(&self.pg.socket_dir)
            .port(self.pg.port)
            .user(&self.pg.superuser)
            .dbname("postgres");
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let until: String = client
            .query_one("SELECT to_timestamp($1)::text", &[&epoch(expires)])
            .await
            .map_err(|e| e.to_string())?
            .get(0);
        let quoted = quote_ident(user);
        let exists = client
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&user])
            .await
            .map_err(|e| e.to_string())?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE ROLE {quoted} IN ROLE {IAM_GROUP}"))
                .await
                .map_err(|e| e.to_string())?;
        }
        // Hex passwords and timestamps need no quoting beyond this.
        client
            .batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256'; \
                 ALTER ROLE {quoted} LOGIN PASSWORD '{password}' VALID UNTIL '{until}'"
            ))
            .await
            .map_err(|e| e.to_string())
    }
}

fn random_password() -> String {
    use std::io::Read;
    let mut buf = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// A stand-in Amazon RDS for PostgreSQL endpoint that checks no token: it
/// speaks TLS (certificate from [`FakeRds::ca_pem`], for `localhost`), asks
/// each login for a cleartext password, records it, and refuses the login as
/// RDS refuses a bad IAM token (`PAM authentication failed`, 28P01).
pub struct FakeRds {
    /// Its port on 127.0.0.1.
    pub port: u16,
    ca_pem: String,
    passwords: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRds {
    /// Starts listening.
    pub async fn start() -> FakeRds {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = crate::certs::TestCa::new("postern-test RDS CA");
        let cert = ca.issue_server(&["localhost", "127.0.0.1"]);
        let chain = rustls_pemfile::certs(&mut cert.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut cert.key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        let passwords = Arc::new(Mutex::new(Vec::new()));
        let recorded = passwords.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let mut ssl_request = [0u8; 8];
                    tcp.read_exact(&mut ssl_request).await?;
                    tcp.write_all(b"S").await?;
                    let mut tls = acceptor.accept(tcp).await?;
                    let startup = read_packet(&mut tls, false).await?;
                    // user\0NAME\0...: after the 4-byte protocol version.
                    let fields: Vec<&[u8]> = startup[4..].split(|b| *b == 0).collect();
                    let user = fields
                        .iter()
                        .position(|f| *f == b"user")
                        .and_then(|i| fields.get(i + 1))
                        .map(|u| String::from_utf8_lossy(u).into_owned())
                        .unwrap_or_default();
                    tls.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3]).await?;
                    let password = read_packet(&mut tls, true).await?;
                    let password =
                        String::from_utf8_lossy(password.strip_suffix(&[0]).unwrap_or(&password))
                            .into_owned();
                    recorded.lock().unwrap().push((user.clone(), password));
                    let mut buf = bytes::BytesMut::new();
                    postern_pgwire::backend::error_response(
                        &postern_pgwire::ErrorFields::fatal(
                            "28P01",
                            format!("PAM authentication failed for user \"{user}\""),
                        ),
                        &mut buf,
                    );
                    tls.write_all(&buf).await?;
                    tls.shutdown().await?;
                    Ok::<_, std::io::Error>(())
                });
            }
        });
        FakeRds {
            port,
            ca_pem: ca.cert_pem().to_owned(),
            passwords,
            task,
        }
    }

    /// The CA of its certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// (user, password) of every login so far.
    pub fn logins(&self) -> Vec<(String, String)> {
        self.passwords.lock().unwrap().clone()
    }
}

impl Drop for FakeRds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one message: a startup packet (no tag) or a tagged one.
async fn read_packet<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    tagged: bool,
) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    if tagged {
        stream.read_u8().await?;
    }
    let len = stream.read_u32().await? as usize;
    let mut body = vec![0u8; len.saturating_sub(4)];
    stream.read_exact(&mut body).await?;
    Ok(body)
}
