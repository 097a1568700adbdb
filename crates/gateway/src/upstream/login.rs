//! The startup conversation with a database: authentication (cleartext,
//! MD5 or SCRAM-SHA-256 inside TLS), then the messages the client must see,
//! with the real cancel key taken out.

use bytes::BytesMut;
use postern_pgwire::auth::{ScramClient, md5_password};
use postern_pgwire::{AuthRequest, BackendMessage, CancelKey, frontend, parse_message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{DbStream, Established, LoginCredentials, Upstream, UpstreamError};
use crate::config::TlsMode;
use crate::names::DbName;

/// Largest message accepted from a database during login.
const LOGIN_MESSAGE_MAX: usize = 1 << 20;

impl Upstream {
    /// Connects and logs in with `credentials` to `db_name`.
    pub(super) async fn login_as(
        &self,
        credentials: &LoginCredentials,
        db_name: &DbName,
        params: &[(&str, &str)],
    ) -> Result<Established, UpstreamError> {
        let db_user = credentials.user.as_str();
        let mut stream = self.connect(credentials.certificate_user()).await?;
        let mut out = BytesMut::with_capacity(256);
        // The caller's `params` hold no reserved name (the tunnel's
        // `StartupParams` make sure), so these two are the only ones.
        frontend::startup_message(
            [("user", db_user), ("database", db_name.as_str())]
                .into_iter()
                .chain(params.iter().copied()),
            &mut out,
        )
        .map_err(|e| UpstreamError::Internal(e.to_string()))?;
        send(&mut stream, &mut out).await?;

        let mut inbuf = BytesMut::with_capacity(8192);
        let mut reply = BytesMut::with_capacity(512);
        let mut key_at = None;
        let mut key = None;
        let mut scram: Option<ScramClient> = None;
        loop {
            let (len, action) = loop {
                let parsed = parse_message(&inbuf, LOGIN_MESSAGE_MAX)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                if let Some((msg, len)) = parsed {
                    let decoded = BackendMessage::decode(&msg)
                        .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                    break (len, self.step(decoded, credentials, &mut scram, &mut out)?);
                }
                if stream.read_buf(&mut inbuf).await? == 0 {
                    return Err(UpstreamError::Protocol(
                        "connection closed during login".into(),
                    ));
                }
            };
            let raw = inbuf.split_to(len);
            match action {
                Step::Reply => send(&mut stream, &mut out).await?,
                Step::Forward => reply.extend_from_slice(&raw),
                Step::Key(real) => {
                    key = Some(real);
                    key_at = Some(reply.len());
                }
                Step::Ready => {
                    reply.extend_from_slice(&raw);
                    let (Some(key), Some(key_at)) = (key, key_at) else {
                        return Err(UpstreamError::Protocol(
                            "no BackendKeyData before ReadyForQuery".into(),
                        ));
                    };
                    if !inbuf.is_empty() {
                        return Err(UpstreamError::Protocol("data after ReadyForQuery".into()));
                    }
                    return Ok(Established {
                        stream,
                        reply,
                        key_at,
                        key,
                    });
                }
                Step::Ignore => {}
            }
        }
    }

    /// Decides what to do with one login message; authentication answers go
    /// into `out`.
    fn step(
        &self,
        msg: BackendMessage<'_>,
        credentials: &LoginCredentials,
        scram: &mut Option<ScramClient>,
        out: &mut BytesMut,
    ) -> Result<Step, UpstreamError> {
        let db_user = credentials.user.as_str();
        let password = || {
            credentials
                .password
                .as_ref()
                .ok_or_else(|| UpstreamError::NoCredentials {
                    database: self.name.clone(),
                    db_user: db_user.to_owned(),
                    why: "the database asked for a password".into(),
                })
        };
        let protocol = |what: &str| UpstreamError::Protocol(what.to_owned());
        Ok(match msg {
            BackendMessage::Authentication(AuthRequest::Ok) => Step::Forward,
            BackendMessage::Authentication(
                AuthRequest::CleartextPassword | AuthRequest::Md5Password { .. },
            ) if self.mode == TlsMode::Insecure => {
                // Without a verified certificate the server may be anyone:
                // a cleartext password is handed to it, and an MD5 answer
                // can be replayed or guessed offline. SCRAM proves the
                // password without revealing it.
                return Err(UpstreamError::PasswordToUnverifiedServer {
                    database: self.name.clone(),
                    db_user: db_user.to_owned(),
                });
            }
            BackendMessage::Authentication(AuthRequest::CleartextPassword) => {
                // Only ever sent inside TLS to a verified server.
                frontend::password_message(password()?.as_bytes(), out).map_err(unsendable)?;
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::Md5Password { salt }) => {
                frontend::password_message(
                    md5_password(db_user, password()?, salt).as_bytes(),
                    out,
                )
                .map_err(unsendable)?;
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::Sasl { mechanisms }) => {
                if !mechanisms.contains(&"SCRAM-SHA-256") {
                    return Err(UpstreamError::NoCredentials {
                        database: self.name.clone(),
                        db_user: db_user.to_owned(),
                        why: format!("unsupported SASL mechanisms {mechanisms:?}"),
                    });
                }
                let client = ScramClient::new(password()?);
                frontend::sasl_initial_response(client.mechanism(), client.initial_message(), out)
                    .map_err(unsendable)?;
                *scram = Some(client);
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::SaslContinue(data)) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| protocol("SASL continue without start"))?;
                client.update(data).map_err(|e| protocol(&e.to_string()))?;
                frontend::sasl_response(client.client_final(), out);
                Step::Reply
            }
            BackendMessage::Authentication(AuthRequest::SaslFinal(data)) => {
                let client = scram
                    .as_mut()
                    .ok_or_else(|| protocol("SASL final without start"))?;
                // Proves the server knew the password too.
                client.finish(data).map_err(|e| protocol(&e.to_string()))?;
                Step::Ignore
            }
            BackendMessage::Authentication(AuthRequest::Unsupported(code)) => {
                return Err(UpstreamError::NoCredentials {
                    database: self.name.clone(),
                    db_user: db_user.to_owned(),
                    why: format!("unsupported authentication request {code}"),
                });
            }
            BackendMessage::ErrorResponse(fields) => {
                return Err(UpstreamError::Refused(fields));
            }
            BackendMessage::BackendKeyData { pid, secret } => Step::Key(CancelKey { pid, secret }),
            BackendMessage::ReadyForQuery(_) => Step::Ready,
            BackendMessage::ParameterStatus { .. } | BackendMessage::NoticeResponse(_) => {
                Step::Forward
            }
            BackendMessage::NegotiateProtocolVersion { .. } => Step::Ignore,
            BackendMessage::Other { tag } => {
                return Err(protocol(&format!(
                    "unexpected message {:?} during login",
                    tag as char
                )));
            }
        })
    }
}

/// A login message that cannot be encoded (a configured password with a
/// NUL): a configuration problem, told without the secret.
fn unsendable(error: postern_pgwire::EncodeError) -> UpstreamError {
    UpstreamError::Internal(format!("a login message could not be sent: {error}"))
}

/// What one login message asks of the gateway.
enum Step {
    /// Send the answer written to `out`.
    Reply,
    /// Pass the message on to the client.
    Forward,
    /// Keep the real cancel key; the client gets the gateway's.
    Key(CancelKey),
    /// Login is done.
    Ready,
    /// Nothing to do.
    Ignore,
}

pub(super) async fn send(stream: &mut DbStream, out: &mut BytesMut) -> std::io::Result<()> {
    stream.write_all(out).await?;
    stream.flush().await?;
    out.clear();
    Ok(())
}
