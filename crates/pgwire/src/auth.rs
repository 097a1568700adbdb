//! Client-side password authentication against a PostgreSQL server.
//!
//! The cryptography is `postgres-protocol`'s; this module only gives it a
//! typed, panic-free surface and readable errors.
//! <https://www.postgresql.org/docs/current/sasl-authentication.html>

use std::io;

use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{
    ChannelBinding, SCRAM_SHA_256, SCRAM_SHA_256_PLUS, ScramSha256,
};

/// Why a SCRAM exchange with the server failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A step was called in the wrong order (a bug in the caller).
    #[error("SCRAM exchange used out of order: {0}")]
    OutOfOrder(&'static str),
    /// The server-first message was unusable (bad nonce, salt or iteration count).
    #[error("the server sent an invalid SCRAM challenge: {0}")]
    ServerFirst(io::Error),
    /// The server-final message did not prove the server knows the password.
    #[error("the server could not prove it knows the password: {0}")]
    ServerFinal(io::Error),
}

/// The response to `AuthenticationMD5Password`: `"md5" + md5(md5(password + user) + salt)` in hex.
pub fn md5_password(user: &str, password: &str, salt: [u8; 4]) -> String {
    md5_hash(user.as_bytes(), password.as_bytes(), salt)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    AwaitingServerFirst,
    AwaitingServerFinal,
    Done,
}

/// The client side of a SCRAM-SHA-256 exchange.
///
/// Send [`mechanism`](Self::mechanism) and [`initial_message`](Self::initial_message)
/// in `SASLInitialResponse`; pass `AuthenticationSASLContinue` data to
/// [`update`](Self::update) and send [`client_final`](Self::client_final) in
/// `SASLResponse`; pass `AuthenticationSASLFinal` data to [`finish`](Self::finish).
pub struct ScramClient {
    inner: ScramSha256,
    mechanism: &'static str,
    // Copies of the messages: `ScramSha256::message` panics once the exchange
    // is over or has failed, and the accessors here must never panic.
    initial: Vec<u8>,
    client_final: Vec<u8>,
    step: Step,
}

// Hand-written so that nothing derived from the password can reach a log.
impl std::fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("step", &self.step)
            .finish_non_exhaustive()
    }
}

impl ScramClient {
    /// `SCRAM-SHA-256` without channel binding.
    pub fn new(password: &str) -> Self {
        // "unsupported" (gs2 flag `n`) rather than "unrequested" (`y`): with
        // `y` a server offering only `-PLUS` would suspect a downgrade attack.
        Self::with_binding(password, ChannelBinding::unsupported(), SCRAM_SHA_256)
    }

    /// `SCRAM-SHA-256-PLUS` bound to the TLS session by `tls-server-end-point`.
    ///
    /// `cert_hash` is the hash of the server's certificate as RFC 5929 defines
    /// it (SHA-256 for SHA-1/SHA-256 signed certificates).
    pub fn new_with_tls_server_end_point(password: &str, cert_hash: Vec<u8>) -> Self {
        Self::with_binding(
            password,
            ChannelBinding::tls_server_end_point(cert_hash),
            SCRAM_SHA_256_PLUS,
        )
    }

    fn with_binding(password: &str, binding: ChannelBinding, mechanism: &'static str) -> Self {
        let inner = ScramSha256::new(password.as_bytes(), binding);
        let initial = inner.message().to_vec();
        ScramClient {
            inner,
            mechanism,
            initial,
            client_final: Vec::new(),
            step: Step::AwaitingServerFirst,
        }
    }

    /// The SASL mechanism name to send in `SASLInitialResponse`.
    pub fn mechanism(&self) -> &'static str {
        self.mechanism
    }

    /// The client-first message for `SASLInitialResponse`.
    pub fn initial_message(&self) -> &[u8] {
        &self.initial
    }

    /// Processes the server-first message (`AuthenticationSASLContinue`).
    pub fn update(&mut self, server_first: &[u8]) -> Result<(), AuthError> {
        if self.step != Step::AwaitingServerFirst {
            return Err(AuthError::OutOfOrder("server-first message received twice"));
        }
        // Whatever happens the inner state machine has moved on.
        self.step = Step::Done;
        self.inner
            .update(server_first)
            .map_err(AuthError::ServerFirst)?;
        self.client_final = self.inner.message().to_vec();
        self.step = Step::AwaitingServerFinal;
        Ok(())
    }

    /// The client-final message for `SASLResponse`; empty until [`update`](Self::update) succeeded.
    pub fn client_final(&self) -> &[u8] {
        &self.client_final
    }

    /// Verifies the server-final message (`AuthenticationSASLFinal`).
    ///
    /// Authentication has only succeeded if this returns `Ok`.
    pub fn finish(&mut self, server_final: &[u8]) -> Result<(), AuthError> {
        if self.step != Step::AwaitingServerFinal {
            return Err(AuthError::OutOfOrder(
                "server-final message before a successful server-first message",
            ));
        }
        self.step = Step::Done;
        self.inner
            .finish(server_final)
            .map_err(AuthError::ServerFinal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use sha2::{Digest, Sha256};

    #[test]
    fn md5_known_vectors() {
        // From rust-postgres' own test suite.
        assert_eq!(
            md5_password("md5_user", "password", [0x2a, 0x3d, 0x8f, 0xe0]),
            "md562af4dd09bbb41884907a838a3233294"
        );
        // Computed independently: python3 hashlib, "md5" + md5(md5("s3cretalice").hex() + salt).
        assert_eq!(
            md5_password("alice", "s3cret", [1, 2, 3, 4]),
            "md5b79948bbeb35dee03ab8fe15a839030b"
        );
    }

    // --- An independent SCRAM-SHA-256 server (RFC 5802 / RFC 7677), as PostgreSQL does it. ---

    fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
        // RFC 2104; every key here is at most 32 bytes, below the 64-byte block.
        let mut block = [0u8; 64];
        block[..key.len()].copy_from_slice(key);
        let inner = Sha256::new()
            .chain_update(block.map(|b| b ^ 0x36))
            .chain_update(msg)
            .finalize();
        Sha256::new()
            .chain_update(block.map(|b| b ^ 0x5c))
            .chain_update(inner)
            .finalize()
            .into()
    }

    fn xor(a: [u8; 32], b: [u8; 32]) -> [u8; 32] {
        std::array::from_fn(|i| a[i] ^ b[i])
    }

    struct Server {
        salted_password: [u8; 32],
        expected_channel_binding: Vec<u8>,
        client_first_bare: String,
        server_first: String,
    }

    impl Server {
        fn start(password: &str, iterations: u32, cbind_data: &[u8], client_first: &[u8]) -> Self {
            let salt = b"0123456789abcdef";
            let mut u = hmac(password.as_bytes(), &[&salt[..], &[0, 0, 0, 1]].concat());
            let mut salted_password = u;
            for _ in 1..iterations {
                u = hmac(password.as_bytes(), &u);
                salted_password = xor(salted_password, u);
            }
            let client_first = std::str::from_utf8(client_first).unwrap();
            let mut parts = client_first.splitn(3, ',');
            let (flag, authzid) = (parts.next().unwrap(), parts.next().unwrap());
            let client_first_bare = parts.next().unwrap().to_owned();
            let client_nonce = client_first_bare.strip_prefix("n=,r=").unwrap();
            let gs2_header = format!("{flag},{authzid},");
            Server {
                salted_password,
                expected_channel_binding: [gs2_header.as_bytes(), cbind_data].concat(),
                server_first: format!(
                    "r={client_nonce}SERVERNONCE,s={},i={iterations}",
                    STANDARD.encode(salt)
                ),
                client_first_bare,
            }
        }

        /// Checks the client's proof; returns the server-final message.
        fn verify(&self, client_final: &[u8]) -> Result<String, &'static str> {
            let client_final = std::str::from_utf8(client_final).unwrap();
            let (without_proof, proof) = client_final.split_once(",p=").unwrap();
            let binding = without_proof
                .strip_prefix("c=")
                .unwrap()
                .split(',')
                .next()
                .unwrap();
            if STANDARD.decode(binding).unwrap() != self.expected_channel_binding {
                return Err("channel binding mismatch");
            }
            let auth_message = format!(
                "{},{},{without_proof}",
                self.client_first_bare, self.server_first
            );
            let client_key = hmac(&self.salted_password, b"Client Key");
            let stored_key: [u8; 32] = Sha256::digest(client_key).into();
            let signature = hmac(&stored_key, auth_message.as_bytes());
            let proof: [u8; 32] = STANDARD.decode(proof).unwrap().try_into().unwrap();
            let recovered: [u8; 32] = Sha256::digest(xor(proof, signature)).into();
            if recovered != stored_key {
                return Err("invalid-proof");
            }
            let server_key = hmac(&self.salted_password, b"Server Key");
            let verifier = hmac(&server_key, auth_message.as_bytes());
            Ok(format!("v={}", STANDARD.encode(verifier)))
        }
    }

    #[test]
    fn scram_against_simulated_server() {
        let mut client = ScramClient::new("correct horse");
        assert_eq!(client.mechanism(), "SCRAM-SHA-256");
        assert!(client.initial_message().starts_with(b"n,,n=,r="));
        assert_eq!(client.client_final(), b"");

        let server = Server::start("correct horse", 4096, b"", client.initial_message());
        client.update(server.server_first.as_bytes()).unwrap();
        let server_final = server.verify(client.client_final()).unwrap();
        client.finish(server_final.as_bytes()).unwrap();
        // Accessors stay usable after the exchange, unlike the wrapped type's.
        assert!(client.client_final().starts_with(b"c=biws,r="));
        assert!(client.initial_message().starts_with(b"n,,"));
    }

    #[test]
    fn scram_plus_binds_to_the_certificate_hash() {
        let cert_hash = vec![0xab; 32];
        let mut client = ScramClient::new_with_tls_server_end_point("pw", cert_hash.clone());
        assert_eq!(client.mechanism(), "SCRAM-SHA-256-PLUS");
        assert!(
            client
                .initial_message()
                .starts_with(b"p=tls-server-end-point,,n=,r=")
        );
        let server = Server::start("pw", 16, &cert_hash, client.initial_message());
        client.update(server.server_first.as_bytes()).unwrap();
        let server_final = server.verify(client.client_final()).unwrap();
        client.finish(server_final.as_bytes()).unwrap();

        // A different certificate (a man in the middle) is noticed by the server.
        let mut client = ScramClient::new_with_tls_server_end_point("pw", vec![0xcd; 32]);
        let server = Server::start("pw", 16, &cert_hash, client.initial_message());
        client.update(server.server_first.as_bytes()).unwrap();
        assert_eq!(
            server.verify(client.client_final()),
            Err("channel binding mismatch")
        );
    }

    #[test]
    fn wrong_password_is_rejected_by_the_server() {
        let mut client = ScramClient::new("wrong");
        let server = Server::start("right", 16, b"", client.initial_message());
        client.update(server.server_first.as_bytes()).unwrap();
        assert_eq!(server.verify(client.client_final()), Err("invalid-proof"));
    }

    #[test]
    fn server_that_does_not_know_the_password_is_rejected() {
        let mut client = ScramClient::new("secret");
        let impostor = Server::start("guess", 16, b"", client.initial_message());
        client.update(impostor.server_first.as_bytes()).unwrap();
        let forged = format!("v={}", STANDARD.encode([7u8; 32]));
        let err = client.finish(forged.as_bytes()).unwrap_err();
        assert!(matches!(err, AuthError::ServerFinal(_)), "{err:?}");
        assert!(err.to_string().starts_with("the server could not prove"));

        let mut client = ScramClient::new("secret");
        let server = Server::start("secret", 16, b"", client.initial_message());
        client.update(server.server_first.as_bytes()).unwrap();
        let err = client.finish(b"e=invalid-proof").unwrap_err();
        assert!(err.to_string().contains("invalid-proof"), "{err}");
    }

    #[test]
    fn invalid_server_first_is_rejected() {
        let mut client = ScramClient::new("pw");
        // The nonce must extend the client's; this one does not.
        let err = client.update(b"r=forged,s=c2FsdA==,i=4096").unwrap_err();
        assert!(matches!(err, AuthError::ServerFirst(_)), "{err:?}");
        assert!(err.to_string().contains("invalid nonce"), "{err}");
        // The exchange is over; nothing panics afterwards.
        assert_eq!(client.client_final(), b"");
        assert!(matches!(
            client.finish(b"v=x"),
            Err(AuthError::OutOfOrder(_))
        ));
    }

    #[test]
    fn steps_out_of_order_are_errors() {
        let mut client = ScramClient::new("pw");
        assert!(matches!(
            client.finish(b"v=x"),
            Err(AuthError::OutOfOrder(_))
        ));

        let mut client = ScramClient::new("pw");
        let server = Server::start("pw", 16, b"", client.initial_message());
        client.update(server.server_first.as_bytes()).unwrap();
        assert!(matches!(
            client.update(server.server_first.as_bytes()),
            Err(AuthError::OutOfOrder(_))
        ));
        let server_final = server.verify(client.client_final()).unwrap();
        client.finish(server_final.as_bytes()).unwrap();
        assert!(matches!(
            client.finish(server_final.as_bytes()),
            Err(AuthError::OutOfOrder(_))
        ));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let text = format!("{:?}", ScramClient::new("hunter2"));
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("SCRAM-SHA-256"));
    }
}
