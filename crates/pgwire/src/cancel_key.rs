//! The key that names a backend in a `CancelRequest`.

/// A backend's cancel key, as `BackendKeyData` hands it out and a
/// `CancelRequest` presents it (protocol 3.0: a 4-byte secret).
///
/// `Debug` shows the pid and hides the secret: whoever holds a key can
/// cancel that backend's queries, so it must not reach a log.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelKey {
    /// Backend process id; no secret (`pg_backend_pid()` shows it).
    pub pid: i32,
    /// Secret that proves the right to cancel. Never log it.
    pub secret: i32,
}

impl std::fmt::Debug for CancelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CancelKey")
            .field("pid", &self.pid)
            .field("secret", &"** redacted **")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_the_secret() {
        let shown = format!(
            "{:?}",
            CancelKey {
                pid: 42,
                secret: 123_456_789
            }
        );
        assert!(shown.contains("42"), "{shown}");
        assert!(!shown.contains("123456789"), "{shown}");
    }
}
