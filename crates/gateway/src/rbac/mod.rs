//! Role-based access control (DESIGN.md §3).
//!
//! Roles are Teleport-style YAML documents held in a [`RoleSet`]. For each
//! session, [`RoleSet::checker`] picks the identity's roles and expands their
//! templates from its traits into an [`AccessChecker`], which decides which
//! database users, names and roles the session may use on a [`Target`] and
//! describes that for the catalog. A value from a trait is always a literal:
//! only what the administrator wrote may be `*`, a glob or a regex.

mod access;
mod limits;
mod matcher;
mod role;
mod set;
mod template;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use access::{AccessChecker, Allowed, Denied, Target};
pub use limits::{SessionDefaults, SessionLimits};
pub(crate) use matcher::whole_value_regex;
pub use role::{AutoUserMode, DbPermission, PermissionMatch, Role, RoleConditions, RoleOptions};
pub use set::RoleSet;

/// Errors loading roles or resolving an identity's roles.
#[derive(Debug, thiserror::Error)]
pub enum RbacError {
    /// A YAML document could not be read as a role at all.
    #[error("YAML document {document}: {message}")]
    Yaml {
        /// 1-based position of the document in its file.
        document: usize,
        /// What is wrong.
        message: String,
    },
    /// A role document is invalid.
    #[error("role {role:?}: {message}")]
    InvalidRole {
        /// The role's name.
        role: String,
        /// What is wrong, naming the field.
        message: String,
    },
    /// Two role documents share a name.
    #[error("role {role:?} is defined more than once")]
    DuplicateRole {
        /// The repeated name.
        role: String,
    },
    /// An identity names a role the gateway does not have.
    #[error("role {role:?} of the session is not defined on the gateway; log in again")]
    UnknownRole {
        /// The missing role's name.
        role: String,
    },
    /// A role file or directory could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error in a particular role file.
    #[error("{}: {source}", path.display())]
    InFile {
        /// The role file.
        path: PathBuf,
        /// The error in it.
        source: Box<RbacError>,
    },
}
