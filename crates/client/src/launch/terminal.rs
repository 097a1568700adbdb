//! psql in a new terminal window: which terminal, and how each OS's
//! terminal is handed the connection without a shell reading it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::endpoint::shell_word;
use super::{Endpoint, LaunchError, Os, detach, find_on_path, is_executable};

/// Where psql is: on PATH, or in a usual install location.
pub fn find_psql() -> Result<PathBuf, LaunchError> {
    if let Some(p) = find_on_path("psql") {
        return Ok(p);
    }
    let extra: &[&str] = match Os::current() {
        Os::MacOs => &[
            "/opt/homebrew/bin/psql",
            "/usr/local/bin/psql",
            "/Applications/Postgres.app/Contents/Versions/latest/bin/psql",
        ],
        Os::Linux => &["/usr/bin/psql", "/usr/local/bin/psql"],
        Os::Windows => &[],
    };
    extra
        .iter()
        .map(PathBuf::from)
        .find(|p| is_executable(p))
        .ok_or(LaunchError::NoPsql)
}

/// Terminal programs tried on Linux, in order.
pub const LINUX_TERMINALS: [&str; 4] =
    ["x-terminal-emulator", "gnome-terminal", "konsole", "xterm"];

/// How to open psql on an endpoint in a new terminal window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminalCommand {
    /// The program to start.
    pub program: PathBuf,
    /// Its arguments. On Windows they reach cmd.exe verbatim, because
    /// cmd.exe does not read quotes the way programs (and Rust) write them:
    /// there they are constants, and nothing from the endpoint is among them.
    pub args: Vec<String>,
    /// Environment for psql. On Windows the connection travels here
    /// (`PGHOST`, `PGDATABASE`, ...), never through cmd.exe's parser.
    pub env: Vec<(String, OsString)>,
}

/// The command that opens psql on `endpoint` in a new terminal window;
/// `find` locates a terminal program by name.
pub fn terminal_command(
    os: Os,
    psql: &Path,
    endpoint: &Endpoint,
    find: impl Fn(&str) -> Option<PathBuf>,
) -> Result<TerminalCommand, LaunchError> {
    let conninfo = endpoint.conninfo();
    let psql_text = psql.display().to_string();
    match os {
        Os::Linux => {
            // Arguments, no shell: the terminal runs psql with them as they are.
            for term in LINUX_TERMINALS {
                if let Some(path) = find(term) {
                    let flag = if term == "gnome-terminal" { "--" } else { "-e" };
                    return Ok(TerminalCommand {
                        program: path,
                        args: vec![flag.to_owned(), psql_text, conninfo],
                        env: Vec::new(),
                    });
                }
            }
            Err(LaunchError::NoTerminal(LINUX_TERMINALS.join(", ")))
        }
        Os::MacOs => {
            // Terminal.app runs a line in a new shell that does not inherit
            // our environment: quote for the shell, then for AppleScript.
            let applescript = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
            let line = format!("{} {}", shell_word(&psql_text), shell_word(&conninfo));
            Ok(TerminalCommand {
                program: PathBuf::from("osascript"),
                args: vec![
                    "-e".into(),
                    format!(
                        "tell application \"Terminal\" to do script \"{}\"",
                        applescript(&line)
                    ),
                    "-e".into(),
                    "tell application \"Terminal\" to activate".into(),
                ],
                env: Vec::new(),
            })
        }
        Os::Windows => {
            // `start` opens a console running `cmd /k psql`, which stays open
            // after psql ends so its last words can be read. psql is found
            // through PATH and the connection through libpq's variables.
            let mut env = endpoint.libpq_env();
            let dirs = psql.parent().map(Path::to_path_buf).into_iter();
            let inherited = std::env::var_os("PATH").unwrap_or_default();
            if let Ok(path) = std::env::join_paths(dirs.chain(std::env::split_paths(&inherited))) {
                env.push(("PATH".into(), path));
            }
            Ok(TerminalCommand {
                program: PathBuf::from("cmd"),
                args: ["/c", "start", "\"Postern psql\"", "cmd", "/k", "psql"]
                    .map(String::from)
                    .to_vec(),
                env,
            })
        }
    }
}

/// Opens psql on the endpoint in a new terminal window; returns the terminal used.
pub fn open_psql_in_terminal(endpoint: &Endpoint) -> Result<String, LaunchError> {
    let psql = find_psql()?;
    let terminal = terminal_command(Os::current(), &psql, endpoint, find_on_path)?;
    let mut cmd = Command::new(&terminal.program);
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        for arg in &terminal.args {
            cmd.raw_arg(arg);
        }
    }
    #[cfg(not(windows))]
    cmd.args(&terminal.args);
    cmd.envs(terminal.env.iter().map(|(k, v)| (k, v)));
    detach(cmd, &terminal.program)?;
    Ok(terminal
        .program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::endpoint::tests::endpoint;

    #[test]
    fn terminals_are_chosen_in_order_per_os() {
        let psql = Path::new("/usr/bin/psql");
        let only = |names: &'static [&'static str]| {
            move |n: &str| {
                names
                    .contains(&n)
                    .then(|| PathBuf::from(format!("/usr/bin/{n}")))
            }
        };
        let e = Endpoint {
            db_user: None,
            db_name: None,
            ..endpoint()
        };
        let conninfo = e.conninfo();
        let t = terminal_command(Os::Linux, psql, &e, only(&["xterm", "konsole"])).unwrap();
        assert_eq!(t.program, PathBuf::from("/usr/bin/konsole"));
        assert_eq!(t.args, ["-e", "/usr/bin/psql", conninfo.as_str()]);
        let t = terminal_command(Os::Linux, psql, &e, only(&["gnome-terminal"])).unwrap();
        assert_eq!(t.program, PathBuf::from("/usr/bin/gnome-terminal"));
        assert_eq!(t.args, ["--", "/usr/bin/psql", conninfo.as_str()]);
        let err = terminal_command(Os::Linux, psql, &e, only(&[])).unwrap_err();
        assert!(err.to_string().contains("xterm"), "{err}");

        let t = terminal_command(Os::MacOs, psql, &e, only(&[])).unwrap();
        assert_eq!(t.program, PathBuf::from("osascript"));
        assert_eq!(
            t.args[1],
            r#"tell application "Terminal" to do script "/usr/bin/psql 'host=127.0.0.1 port=40111 sslmode=disable'""#
        );
    }

    /// Database names that cmd.exe would read as commands or variables,
    /// and a shell as quotes.
    const HOSTILE: [&str; 5] = [
        "x\" & calc & \"",
        "a&b",
        "caret^\" ^& whoami",
        "%COMSPEC%",
        "it's \"$(id)\" `id` \\",
    ];

    /// The first character cmd.exe would act on in `line`: an operator
    /// outside its quotes (cmd.exe knows no `\"`), or `%`, which it expands
    /// even inside quotes.
    fn cmd_exe_acts_on(line: &str) -> Option<char> {
        let mut quoted = false;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => quoted = !quoted,
                '%' => return Some(c),
                '^' if !quoted => {
                    chars.next();
                }
                '&' | '|' | '<' | '>' | '(' | ')' if !quoted => return Some(c),
                _ => {}
            }
        }
        None
    }

    fn hostile(name: &str) -> Endpoint {
        Endpoint {
            db_name: Some(name.into()),
            db_user: Some(format!("u{name}")),
            ..endpoint()
        }
    }

    #[test]
    fn windows_terminal_line_gives_cmd_exe_nothing_to_act_on() {
        let psql = Path::new(r"C:\Program Files\PostgreSQL\16\bin\psql.exe");
        for name in HOSTILE {
            let t = terminal_command(Os::Windows, psql, &hostile(name), |_| None).unwrap();
            assert_eq!(t.program, PathBuf::from("cmd"));
            // The arguments are passed verbatim: this is cmd.exe's line.
            let line = t.args.join(" ");
            assert_eq!(line, r#"/c start "Postern psql" cmd /k psql"#);
            assert_eq!(
                cmd_exe_acts_on(&line),
                None,
                "{name:?}: cmd.exe would act on {line}"
            );
            // psql gets the values exactly, through libpq's environment.
            let env = |k: &str| t.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(env("PGDATABASE"), Some(name.into()));
            assert_eq!(env("PGUSER"), Some(format!("u{name}").into()));
            assert_eq!(env("PGPORT"), Some("40111".into()));
            let path = env("PATH").unwrap();
            assert_eq!(
                std::env::split_paths(&path).next().unwrap(),
                psql.parent().unwrap()
            );
        }
    }

    #[test]
    fn macos_terminal_line_hands_psql_the_exact_conninfo() {
        let psql = Path::new("/usr/bin/psql");
        for name in HOSTILE {
            let e = hostile(name);
            let t = terminal_command(Os::MacOs, psql, &e, |_| None).unwrap();
            // Undo AppleScript's string quoting, then let a shell read the line.
            let script = t.args[1]
                .strip_prefix(r#"tell application "Terminal" to do script ""#)
                .and_then(|s| s.strip_suffix('"'))
                .unwrap();
            let line = script.replace("\\\"", "\"").replace("\\\\", "\\");
            let words = line.strip_prefix("/usr/bin/psql ").unwrap();
            let Ok(out) = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {words}"))
                .output()
            else {
                continue;
            };
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                e.conninfo(),
                "{name:?}"
            );
        }
    }
}
