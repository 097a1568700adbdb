//! The `pg_service.conf` entry, so any libpq client can say `service=NAME`.

use std::path::{Path, PathBuf};

use super::{Endpoint, LaunchError, io};

/// The service file libpq reads: `$PGSERVICEFILE`, else `~/.pg_service.conf`
/// (`%APPDATA%\postgresql\.pg_service.conf` on Windows).
pub fn service_file() -> Result<PathBuf, LaunchError> {
    if let Some(p) = std::env::var_os("PGSERVICEFILE").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let no_home = || io("finding the home directory")(std::io::Error::other("no home directory"));
    if cfg!(windows) {
        let appdata = std::env::var_os("APPDATA").ok_or_else(no_home)?;
        return Ok(PathBuf::from(appdata)
            .join("postgresql")
            .join(".pg_service.conf"));
    }
    let home = directories::BaseDirs::new().ok_or_else(no_home)?;
    Ok(home.home_dir().join(".pg_service.conf"))
}

/// Replaces the `[name]` section of a service file's text with `section`, or
/// appends it; everything else is kept as it was.
pub fn replace_section(text: &str, name: &str, section: &str) -> String {
    let header = format!("[{name}]");
    let mut out = String::with_capacity(text.len() + section.len());
    let mut lines = text.split_inclusive('\n').peekable();
    let mut replaced = false;
    while let Some(line) = lines.next() {
        if line.trim() == header && !replaced {
            // Skip the old section up to the next header.
            while lines
                .peek()
                .is_some_and(|next| !next.trim_start().starts_with('['))
            {
                lines.next();
            }
            out.push_str(section);
            if lines.peek().is_some() {
                out.push('\n');
            }
            replaced = true;
        } else {
            out.push_str(line);
        }
    }
    if !replaced {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        if !out.is_empty() && !out.ends_with("\n\n") {
            out.push('\n');
        }
        out.push_str(section);
    }
    out
}

/// Writes (or replaces) the endpoint's section in the service file at `path`;
/// returns the service name, for `psql service=NAME`.
pub fn write_service(path: &Path, endpoint: &Endpoint) -> Result<String, LaunchError> {
    endpoint.check_writable()?;
    let name = endpoint.entry_name();
    let old = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
    };
    let new = replace_section(&old, &name, &endpoint.service_section(&name));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension("postern-tmp");
    std::fs::write(&tmp, new).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::endpoint::tests::endpoint;

    #[test]
    fn service_sections_are_created_and_replaced_in_place() {
        let e = endpoint();
        let name = e.entry_name();
        assert_eq!(name, "postern-demo-pg-demo_reader-shop");
        let section = e.service_section(&name);
        assert!(section.contains("host=127.0.0.1\nport=40111\nuser=demo_reader\ndbname=shop\n"));

        let created = replace_section("", &name, &section);
        assert_eq!(created, section);

        let other = "# mine\n[prod]\nhost=db\n\n";
        let appended = replace_section(other, &name, &section);
        assert_eq!(appended, format!("{other}{section}"));

        let moved = Endpoint {
            port: 40999,
            ..e.clone()
        };
        let text = format!("[a]\nhost=x\n\n{section}\n[b]\nhost=y\n");
        let replaced = replace_section(&text, &name, &moved.service_section(&name));
        assert!(replaced.starts_with("[a]\nhost=x\n\n[postern-demo-pg"));
        assert!(replaced.contains("port=40999"));
        assert!(!replaced.contains("port=40111"));
        assert!(replaced.ends_with("\n[b]\nhost=y\n"), "{replaced}");
        assert_eq!(replaced.matches(&format!("[{name}]")).count(), 1);
    }

    #[test]
    fn write_service_creates_the_file_then_keeps_other_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/pg_service.conf");
        let e = endpoint();
        assert_eq!(
            write_service(&path, &e).unwrap(),
            "postern-demo-pg-demo_reader-shop"
        );
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("\n[mine]\nhost=elsewhere\n");
        std::fs::write(&path, text).unwrap();
        write_service(
            &path,
            &Endpoint {
                port: 5,
                ..e.clone()
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("port=5\n") && !text.contains("port=40111"));
        assert!(text.contains("[mine]\nhost=elsewhere\n"));
    }
}
