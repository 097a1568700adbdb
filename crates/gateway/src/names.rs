//! Names that must not be mixed up: a catalog database, a database user
//! and a database name inside a server are all strings, and a function
//! taking three `&str`s invites swapping them (neon's `types.rs`).
//!
//! The types hold any string; values from clients are checked once at the
//! edge (`tunnel::route`) before they become one of these.

/// Defines a string newtype: constructed explicitly, read with `as_str`,
/// shown (`Display`, `Debug`) as the plain string.
macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Deserialize, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a name.
            pub fn new(name: impl Into<String>) -> Self {
                $name(name.into())
            }

            /// The name as written.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.0, f)
            }
        }
    };
}

name_type!(
    /// A database's name in the gateway's catalog (`databases[].name`).
    DatabaseName
);
name_type!(
    /// A user inside a database server: what a StartupMessage's `user` says.
    DbUser
);
name_type!(
    /// A database inside a server: what a StartupMessage's `database` says.
    DbName
);
