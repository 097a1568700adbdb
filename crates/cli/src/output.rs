//! How the CLI shows things: aligned text for people, JSON for scripts.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_api::wire::Catalog;
use postern_client::ClientError;
use postern_client::profile::ProfileEntry;
use postern_client::queries::{CancelOutcome, GuardEvent, RunningQuery};
use postern_client::session::ActiveSession;

use crate::args::Format;

/// An error as the CLI says it: with the command or flag that fixes it
/// where there is one; other facts in the client's neutral words.
pub fn error(e: &ClientError) -> String {
    use ClientError as C;
    match e {
        C::NotLoggedIn => "you are not logged in; run `postern login GATEWAY`".into(),
        C::SessionExpired => "your Postern session expired; run `postern login` again".into(),
        C::UnknownProfile(name) => {
            format!("there is no profile {name:?}; `postern profiles` lists them")
        }
        C::CaMismatch { addr, pinned, got } => format!(
            "WARNING: the gateway at {addr} presented CA {got}, but this profile trusts {pinned}. \
             Someone may be intercepting the connection, or the gateway's CA was replaced. \
             If an administrator confirms the new CA, log in again with --ca-pin {got}"
        ),
        C::UntrustedCa { addr, fingerprint } => format!(
            "the gateway at {addr} presented CA {fingerprint}; pass --ca-pin {fingerprint} if you trust it"
        ),
        C::BadPin => "--ca-pin must look like sha256:<64 hex digits>".into(),
        C::TotpRequired => "a one-time code is required: give the code from your authenticator \
                            app with --totp CODE"
            .into(),
        C::LoginTimedOut(within) => format!(
            "the sign-in was not completed within {within}; run `postern login --sso` again"
        ),
        C::DeviceCodeExpired => "the sign-in code expired before anyone approved it; run \
                                 `postern login --sso --device` again"
            .into(),
        C::NoSsoConnector => {
            "this gateway offers no single sign-on; log in with --user NAME".into()
        }
        C::SeveralSsoConnectors(names) => format!(
            "this gateway has several single sign-on connectors ({}); name one: --sso NAME",
            names.join(", ")
        ),
        C::Keychain(reason) => format!(
            "cannot use the OS keychain key store: {reason}; on a machine without a keychain \
             use --key-store file"
        ),
        C::PortUnavailable { port, reason } => format!(
            "port {port} on 127.0.0.1 is not available ({reason}); pick another with --port, \
             or omit --port"
        ),
        C::SocketTaken { dir, port } => format!(
            "port {port} in {dir} is in use by another program; pick another with --port, \
             or omit --port"
        ),
        C::UnknownDatabase(db) => {
            format!("database {db:?} is not available to you; run `postern db ls`")
        }
        _ => e.to_string(),
    }
}

/// `url` as a QR code of Unicode half blocks, when standard output is a
/// terminal wide and tall enough to show it whole.
pub fn qr_code(url: &str) -> Option<String> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    let (terminal_size::Width(columns), terminal_size::Height(rows)) =
        terminal_size::terminal_size()?;
    qr_code_within(url, usize::from(columns), usize::from(rows))
}

/// `url` as a QR code if it fits in `columns` by `rows` (with a line to
/// spare for the prompt).
fn qr_code_within(url: &str, columns: usize, rows: usize) -> Option<String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::new(url.as_bytes()).ok()?;
    // Light modules dark and dark ones light: most terminals are dark, and
    // a QR code needs its light quiet zone around it.
    let rendered = code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build();
    let width = rendered
        .lines()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    let height = rendered.lines().count();
    (width <= columns && height < rows).then_some(rendered)
}

/// A Unix time as RFC 3339 UTC plus the time left.
pub fn when(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    let left = at
        .duration_since(SystemTime::now())
        .map(|d| {
            format!(
                "in {}",
                humantime::format_duration(Duration::from_secs(d.as_secs() / 60 * 60))
            )
        })
        .unwrap_or_else(|_| "expired".into());
    format!("{} ({left})", humantime::format_rfc3339_seconds(at))
}

/// `postern status`.
pub fn status(session: &ActiveSession, format: Format) {
    let id = &session.identity;
    if format == Format::Json {
        let value = serde_json::json!({
            "profile": session.profile.name,
            "gateway": session.profile.gateway,
            "ca_pin": session.profile.ca_pin,
            "identity": id,
        });
        println!("{}", serde_json::to_string_pretty(&value).expect("json"));
        return;
    }
    println!(
        "Profile:  {} (gateway {})",
        session.profile.name, session.profile.gateway
    );
    println!("User:     {}", id.username);
    println!("Roles:    {}", id.roles.join(", "));
    for (k, v) in &id.traits.internal {
        println!("Trait:    internal.{k} = {}", v.join(", "));
    }
    for (k, v) in &id.traits.external {
        println!("Trait:    external.{k} = {}", v.join(", "));
    }
    println!("Expires:  {}", when(id.expires_unix));
    println!("CA pin:   {}", session.profile.ca_pin);
}

/// `postern profiles`: one line per gateway, the current one starred.
pub fn profiles(entries: &[ProfileEntry], format: Format) {
    if format == Format::Json {
        let list: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                let id = e.profile.identity.as_ref();
                serde_json::json!({
                    "name": e.profile.name,
                    "current": e.current,
                    "gateway": e.profile.gateway,
                    "ca_pin": e.profile.ca_pin,
                    "user": id.map(|i| &i.username),
                    "roles": id.map(|i| &i.roles),
                    "expires_unix": id.map(|i| i.expires_unix),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list).expect("json"));
        return;
    }
    if entries.is_empty() {
        println!("No profiles yet; run `postern login GATEWAY`.");
        return;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let (user, expires) = match (&e.profile.identity, &e.profile.cert_pem) {
                (Some(id), Some(_)) => (id.username.clone(), when(id.expires_unix)),
                _ => ("-".into(), "logged out".into()),
            };
            vec![
                if e.current { "*" } else { "" }.into(),
                e.profile.name.clone(),
                e.profile.gateway.clone(),
                user,
                expires,
            ]
        })
        .collect();
    print_table(&["", "Profile", "Gateway", "User", "Expires"], &rows);
}

/// `postern db ls [-v]`.
pub fn databases(catalog: &Catalog, verbose: bool, format: Format) {
    if format == Format::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&catalog.databases).expect("json")
        );
        return;
    }
    if catalog.databases.is_empty() {
        println!("No databases are available to you.");
        return;
    }
    let mut header = vec!["Name", "Description", "Kind"];
    if verbose {
        header.extend([
            "Allowed users",
            "Database names",
            "Database roles",
            "Provisioning",
            "Limits",
            "Labels",
        ]);
    }
    let rows: Vec<Vec<String>> = catalog
        .databases
        .iter()
        .map(|d| {
            let mut row = vec![d.name.clone(), d.description.clone(), d.kind.clone()];
            if verbose {
                let labels: Vec<String> =
                    d.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                row.extend([
                    d.db_users.describe(),
                    d.db_names.describe(),
                    format!("[{}]", d.db_roles.join(", ")),
                    if d.auto_user_mode == "off" {
                        "no".into()
                    } else {
                        format!("auto-provisioned ({})", d.auto_user_mode)
                    },
                    d.limits.describe(),
                    labels.join(","),
                ]);
            }
            row
        })
        .collect();
    print_table(&header, &rows);
}

fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    line(
        widths
            .iter()
            .map(|w| "-".repeat(*w))
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `postern db queries`.
pub fn queries(list: &[RunningQuery], format: Format) {
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(list).expect("json"));
        return;
    }
    if list.is_empty() {
        println!("No running statements.");
        return;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|q| {
            vec![
                q.pid.to_string(),
                q.user.clone(),
                q.database.clone(),
                humantime::format_rfc3339_seconds(
                    UNIX_EPOCH + Duration::from_secs_f64(q.started_unix.max(0.0)),
                )
                .to_string(),
                format_duration_ms(q.duration_ms),
                q.state.clone(),
                q.wait_event.clone().unwrap_or_default(),
                q.query.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "PID",
            "User",
            "Database",
            "Started",
            "Duration",
            "State",
            "Waiting on",
            "Query",
        ],
        &rows,
    );
}

fn format_duration_ms(ms: f64) -> String {
    let secs = ms / 1000.0;
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
    }
}

/// `postern db cancel`.
pub fn cancel_outcome(pid: i32, outcome: &CancelOutcome) -> String {
    match outcome {
        CancelOutcome::Cancelled => format!("Cancelled the statement of process {pid}."),
        CancelOutcome::Terminated => format!("Terminated process {pid}; its session has ended."),
        CancelOutcome::StillRunning => {
            format!("Asked process {pid} to stop, but it is still running; try --terminate.")
        }
    }
}

/// One line for a runaway-guard event.
pub fn guard_event(event: &GuardEvent) -> String {
    match event {
        GuardEvent::Warned(q) => format!(
            "postern: process {} has been running for {}: {}",
            q.pid,
            format_duration_ms(q.duration_ms),
            q.query
        ),
        GuardEvent::Cancelled(q) => format!(
            "postern: cancelled process {} after {}: {}",
            q.pid,
            format_duration_ms(q.duration_ms),
            q.query
        ),
        GuardEvent::Failed(why) => format!("postern: runaway guard: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_qr_code_is_shown_only_where_it_fits_whole() {
        let url = "https://gw.example.com:3080/v1/login/device?user_code=BCDF-GHJK";
        let qr = qr_code_within(url, 200, 100).expect("fits a large terminal");
        let width = qr.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(
            qr.lines().all(|l| l.chars().count() == width),
            "square: {qr}"
        );
        assert!(qr.chars().all(|c| " ▀▄█\n".contains(c)), "half blocks only");
        assert_eq!(qr_code_within(url, width - 1, 100), None, "too narrow");
        assert_eq!(
            qr_code_within(url, 200, qr.lines().count()),
            None,
            "too short"
        );
    }

    #[test]
    fn every_error_reads_as_a_cli_sentence_with_its_fix() {
        for e in ClientError::examples() {
            let text = error(&e);
            assert!(!text.is_empty() && !text.ends_with('.'), "{e:?}: {text}");
            for app_word in ["button", "Sign in again", "Settings"] {
                assert!(!text.contains(app_word), "{e:?} names {app_word:?}: {text}");
            }
            let has_a_fix = matches!(
                e,
                ClientError::NotLoggedIn
                    | ClientError::SessionExpired
                    | ClientError::UnknownProfile(_)
                    | ClientError::CaMismatch { .. }
                    | ClientError::UntrustedCa { .. }
                    | ClientError::BadPin
                    | ClientError::TotpRequired
                    | ClientError::LoginTimedOut(_)
                    | ClientError::DeviceCodeExpired
                    | ClientError::NoSsoConnector
                    | ClientError::SeveralSsoConnectors(_)
                    | ClientError::Keychain(_)
                    | ClientError::PortUnavailable { .. }
                    | ClientError::SocketTaken { .. }
                    | ClientError::UnknownDatabase(_)
            );
            if has_a_fix {
                assert!(
                    text.contains("--") || text.contains("`postern "),
                    "{e:?} names no flag or command: {text}"
                );
            }
        }
        assert_eq!(
            error(&ClientError::UntrustedCa {
                addr: "gw:3080".into(),
                fingerprint: "sha256:bb".into(),
            }),
            "the gateway at gw:3080 presented CA sha256:bb; pass --ca-pin sha256:bb if you trust it"
        );
    }
}
