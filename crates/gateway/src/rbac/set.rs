//! All roles the gateway knows, loaded from role files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use postern_api::Identity;

use super::access::AccessChecker;
use super::{RbacError, Role};

/// All roles the gateway knows, by name.
#[derive(Clone, Debug, Default)]
pub struct RoleSet {
    roles: BTreeMap<String, Role>,
}

impl RoleSet {
    /// Parses the roles of one YAML stream (several `---` documents allowed).
    pub fn from_yaml_documents(text: &str) -> Result<Vec<Role>, RbacError> {
        Role::parse_documents(text)
    }

    /// Loads role files: each path is a YAML file or a directory whose
    /// `*.yaml` / `*.yml` files are read (in name order, not recursively).
    pub fn load_paths(paths: &[PathBuf]) -> Result<RoleSet, RbacError> {
        let (set, errors) = Self::load_paths_all(paths);
        match errors.into_iter().next() {
            Some(first) => Err(first),
            None => Ok(set),
        }
    }

    /// Like [`RoleSet::load_paths`], but reads on past a bad role, file or
    /// directory: the good roles, and every error in reading order (in a
    /// file, its bad documents' before its repeated names).
    pub fn load_paths_all(paths: &[PathBuf]) -> (RoleSet, Vec<RbacError>) {
        let mut set = RoleSet::default();
        let mut errors = Vec::new();
        for path in paths {
            match role_files(path) {
                Ok(files) => {
                    for file in files {
                        set.load_file(&file, &mut errors);
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (set, errors)
    }

    /// Adds the good roles of one file; its errors name it.
    fn load_file(&mut self, file: &Path, errors: &mut Vec<RbacError>) {
        let in_file = |source: RbacError| RbacError::InFile {
            path: file.to_owned(),
            source: Box::new(source),
        };
        let documents = std::fs::read_to_string(file)
            .map_err(|source| RbacError::Io {
                path: file.to_owned(),
                source,
            })
            .and_then(|text| Role::parse_each_document(&text).map_err(in_file));
        let documents = match documents {
            Ok(documents) => documents,
            Err(e) => return errors.push(e),
        };
        let mut roles = Vec::new();
        for document in documents {
            match document {
                Ok(role) => roles.push(role),
                Err(e) => errors.push(in_file(e)),
            }
        }
        for role in roles {
            if let Err(e) = self.insert(role) {
                errors.push(in_file(e));
            }
        }
    }

    /// Builds a set from parsed roles, validating each.
    pub fn from_roles(roles: Vec<Role>) -> Result<RoleSet, RbacError> {
        let mut set = RoleSet::default();
        for role in roles {
            role.validate()?;
            set.insert(role)?;
        }
        Ok(set)
    }

    fn insert(&mut self, role: Role) -> Result<(), RbacError> {
        if self.roles.contains_key(&role.name) {
            return Err(RbacError::DuplicateRole { role: role.name });
        }
        self.roles.insert(role.name.clone(), role);
        Ok(())
    }

    /// The role with this name.
    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Role names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// The roles of an identity, templates expanded from its traits.
    ///
    /// A role name the gateway does not know is an error rather than being
    /// skipped: a stale certificate must not silently lose a deny rule.
    pub fn checker(&self, identity: &Identity) -> Result<AccessChecker, RbacError> {
        let roles = identity
            .roles
            .iter()
            .map(|name| {
                self.get(name)
                    .ok_or_else(|| RbacError::UnknownRole { role: name.clone() })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AccessChecker::new(identity, roles))
    }
}

/// The files `path` names: itself, or a directory's YAML files.
fn role_files(path: &Path) -> Result<Vec<PathBuf>, RbacError> {
    if !path.is_dir() {
        // A file named explicitly is read whatever its extension.
        return Ok(vec![path.to_owned()]);
    }
    let io_error = |source| RbacError::Io {
        path: path.to_owned(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io_error)? {
        let file = entry.map_err(io_error)?.path();
        let is_yaml = file
            .extension()
            .is_some_and(|ext| ext == "yaml" || ext == "yml");
        if is_yaml && file.is_file() {
            found.push(file);
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn role_yaml(name: &str) -> String {
        format!("kind: role\nversion: v7\nmetadata: {{name: {name}}}\n")
    }

    #[test]
    fn loads_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let roles = dir.path().join("roles");
        std::fs::create_dir(&roles).unwrap();
        std::fs::write(roles.join("b.yml"), role_yaml("b")).unwrap();
        std::fs::write(
            roles.join("a.yaml"),
            format!("{}---\n{}", role_yaml("a1"), role_yaml("a2")),
        )
        .unwrap();
        std::fs::write(roles.join("notes.txt"), "not a role").unwrap();
        std::fs::create_dir(roles.join("nested.yaml")).unwrap();
        let extra = dir.path().join("extra.role");
        std::fs::write(&extra, role_yaml("extra")).unwrap();

        let set = RoleSet::load_paths(&[roles, extra]).unwrap();
        assert_eq!(set.names().collect::<Vec<_>>(), ["a1", "a2", "b", "extra"]);
        assert_eq!(set.get("b").unwrap().name, "b");
        assert!(set.get("c").is_none());
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("first.yaml");
        let second = dir.path().join("second.yaml");
        std::fs::write(&first, role_yaml("same")).unwrap();
        std::fs::write(&second, role_yaml("same")).unwrap();
        let err = RoleSet::load_paths(&[first.clone(), second.clone()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: role \"same\" is defined more than once",
                second.display()
            )
        );

        std::fs::write(
            &second,
            "kind: role\nversion: v7\nmetadata: {name: bad}\nspec: {allow: {db_user: x}}\n",
        )
        .unwrap();
        let err = RoleSet::load_paths(std::slice::from_ref(&second))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!(
                "{}: role \"bad\": spec.allow: unknown field `db_user`",
                second.display()
            )),
            "{err}"
        );

        let missing = dir.path().join("missing.yaml");
        let err = RoleSet::load_paths(&[missing]).unwrap_err();
        assert!(matches!(err, RbacError::Io { .. }), "{err:?}");
    }

    #[test]
    fn from_roles_refuses_duplicates_and_invalid_roles() {
        let roles =
            RoleSet::from_yaml_documents(&format!("{}---\n{}", role_yaml("x"), role_yaml("x")))
                .unwrap();
        assert!(matches!(
            RoleSet::from_roles(roles),
            Err(RbacError::DuplicateRole { role }) if role == "x"
        ));
        let mut role = RoleSet::from_yaml_documents(&role_yaml("y"))
            .unwrap()
            .remove(0);
        role.deny.db_labels = [("*".into(), vec!["*".into()])].into();
        role.deny.db_users = vec!["{{internal.x".into()];
        assert!(matches!(
            RoleSet::from_roles(vec![role]),
            Err(RbacError::InvalidRole { role, .. }) if role == "y"
        ));
    }
}
