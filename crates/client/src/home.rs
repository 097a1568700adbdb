//! The Postern home directory (`$POSTERN_HOME`) and how files under it are
//! written. Profiles, keys, ports and favourites all live here; this module
//! knows none of them, so each can depend on it without depending on the
//! others.

use std::path::{Path, PathBuf};

use crate::error::ClientError;

/// The Postern home directory.
#[derive(Clone, Debug)]
pub struct Home {
    dir: PathBuf,
}

impl Home {
    /// `$POSTERN_HOME`, or the platform config directory.
    pub fn from_env() -> Result<Self, ClientError> {
        if let Some(dir) = std::env::var_os("POSTERN_HOME").filter(|d| !d.is_empty()) {
            return Ok(Home::at(PathBuf::from(dir)));
        }
        let dirs =
            directories::ProjectDirs::from("dev", "Postern", "postern").ok_or_else(|| {
                ClientError::Io {
                    what: "finding the config directory".into(),
                    source: std::io::Error::other("no home directory; set POSTERN_HOME"),
                }
            })?;
        Ok(Home::at(dirs.config_dir().to_owned()))
    }

    /// A home at an explicit directory.
    pub fn at(dir: PathBuf) -> Self {
        Home { dir }
    }

    /// The directory itself, for files that live under it.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes a file readable only by its owner, via a temporary file and rename
/// so readers (the other of CLI and app) never see half a file.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), ClientError> {
    let dir = path.parent().expect("paths under home have a parent");
    std::fs::create_dir_all(dir).map_err(ClientError::io(format!("creating {}", dir.display())))?;
    let tmp = path.with_extension("tmp");
    {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options
            .open(&tmp)
            .map_err(ClientError::io(format!("writing {}", tmp.display())))?;
        std::io::Write::write_all(&mut file, contents)
            .map_err(ClientError::io(format!("writing {}", tmp.display())))?;
    }
    std::fs::rename(&tmp, path).map_err(ClientError::io(format!("writing {}", path.display())))
}
