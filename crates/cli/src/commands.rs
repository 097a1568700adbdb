//! One function per command, each a thin layer over `postern-client`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use postern_client::ClientError;
use postern_client::api::GatewayClient;
use postern_client::device::{DeviceLogin, DevicePrompt, login_device};
use postern_client::home::Home;
use postern_client::login::{LocalLogin, login_local, logout};
use postern_client::manager::{TunnelInfo, TunnelManager, TunnelRequest};
use postern_client::profile::Profile;
use postern_client::queries::{CancelOutcome, GuardPolicy};
use postern_client::session::SessionSource;
use postern_client::sso::{SsoLogin, login_sso, open_browser};

use crate::args::{
    Browser, Cli, Command, DbCommand, LoginArgs, ProfilesCommand, ProxyCommand, TargetArgs,
    TunnelArgs,
};
use crate::output;

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode, Failure> {
    let home = Home::from_env()?;
    let profile = cli.profile.as_deref();
    match cli.command {
        Command::Login(args) => login(&home, profile, args).await,
        Command::Status { format } => {
            let session = SessionSource::resolve(home.clone(), profile)?
                .current()
                .await?;
            output::status(&session, format);
            Ok(ExitCode::SUCCESS)
        }
        Command::Profiles { command, format } => match command {
            None => {
                output::profiles(&home.entries()?, format);
                Ok(ExitCode::SUCCESS)
            }
            Some(ProfilesCommand::Use { name }) => {
                let p = home.use_profile(&name)?;
                println!("Now using profile {:?} (gateway {}).", p.name, p.gateway);
                Ok(ExitCode::SUCCESS)
            }
        },
        Command::Logout => {
            let p = logout(&home, profile)?;
            println!("Logged out of {} (profile {:?}).", p.gateway, p.name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Ls { verbose, format }) => {
            let session = SessionSource::resolve(home.clone(), profile)?
                .current()
                .await?;
            let catalog = GatewayClient::for_session(&session)?.databases().await?;
            output::databases(&catalog, verbose, format);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Connect(args)) => connect(&home, profile, args).await,
        Command::Db(DbCommand::Queries { target, format }) => {
            let (manager, id) = private_tunnel(&home, profile, &target).await?;
            output::queries(&manager.queries(id).await?, format);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Cancel {
            target,
            pid,
            terminate,
        }) => {
            let (manager, id) = private_tunnel(&home, profile, &target).await?;
            let outcome = manager.cancel(id, pid, terminate).await?;
            println!("{}", output::cancel_outcome(pid, &outcome));
            Ok(match outcome {
                CancelOutcome::StillRunning => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Proxy(ProxyCommand::Db(args)) => proxy(&home, profile, args).await,
    }
}

fn read_password(from_stdin: bool) -> Result<String, ClientError> {
    if from_stdin || !std::io::stdin().is_terminal() {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(ClientError::io("reading the password"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    rpassword::prompt_password("Password: ").map_err(ClientError::io("reading the password"))
}

/// Asks on the terminal whether to trust a gateway CA seen for the first time.
fn confirm_ca(gateway: &str, fingerprint: &str, interactive: bool) -> bool {
    if !interactive {
        return false;
    }
    eprintln!("The gateway at {gateway} presented a CA this computer has not seen before:");
    eprintln!("  {fingerprint}");
    eprint!(
        "Trust it and log in? Compare with `postern-gateway` output or ask your administrator. [y/N] "
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).is_ok()
        && matches!(answer.trim(), "y" | "Y" | "yes")
}

fn read_totp() -> Result<String, ClientError> {
    eprint!("One-time code (if your account has one; Enter if not): ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(ClientError::io("reading the one-time code"))?;
    Ok(line.trim().to_owned())
}

async fn login(home: &Home, profile: Option<&str>, args: LoginArgs) -> Result<ExitCode, Failure> {
    if args.sso.is_none() && (args.browser.is_some() || args.timeout.is_some()) {
        return Err(Failure::Usage(
            "--browser and --timeout belong to single sign-on: add --sso",
        ));
    }
    let p = match (args.sso.clone(), args.user.clone()) {
        (Some(connector), _) if args.device => {
            login_with_device(home, profile, args, connector).await?
        }
        (Some(connector), _) => login_with_sso(home, profile, args, connector).await?,
        (None, Some(user)) => login_with_password(home, profile, args, user).await?,
        // clap requires --user unless --sso.
        (None, None) => unreachable!("clap requires --user or --sso"),
    };
    let identity = p.identity.as_ref().expect("login stores the identity");
    println!(
        "Logged in to {} as {} (roles: {}). Session valid until {}.",
        p.gateway,
        identity.username,
        identity.roles.join(", "),
        output::when(identity.expires_unix)
    );
    Ok(ExitCode::SUCCESS)
}

async fn login_with_password(
    home: &Home,
    profile: Option<&str>,
    args: LoginArgs,
    user: String,
) -> Result<Profile, ClientError> {
    let interactive = !args.password_stdin && std::io::stdin().is_terminal();
    let password = read_password(args.password_stdin)?;
    let request = |totp: Option<String>, ca_pin: Option<String>| LocalLogin {
        gateway: args.gateway.clone(),
        username: user.clone(),
        password: password.clone(),
        totp,
        ca_pin,
        key_store: args.key_store,
        profile: profile.map(str::to_owned),
    };
    let gateway = args.gateway.clone();
    let trusted = std::cell::RefCell::new(None::<String>);
    let first = login_local(
        home,
        request(args.totp.clone(), args.ca_pin.clone()),
        |fp| {
            let yes = confirm_ca(&gateway, fp, interactive);
            if yes {
                *trusted.borrow_mut() = Some(fp.to_owned());
            }
            yes
        },
    )
    .await;
    match first {
        // The gateway answers a wrong password and a missing code alike (so
        // a guesser learns nothing), and gateways before that asked for the
        // code. On a terminal, ask once: an empty answer keeps the refusal.
        // The CA trusted a moment ago is not asked about again.
        Err(refused @ (ClientError::TotpRequired | ClientError::LoginRefused(_)))
            if interactive && args.totp.is_none() =>
        {
            let code = read_totp()?;
            if code.is_empty() {
                return Err(refused);
            }
            let pin = args.ca_pin.clone().or(trusted.take());
            login_local(home, request(Some(code), pin), |fp| {
                confirm_ca(&gateway, fp, interactive)
            })
            .await
        }
        other => other,
    }
}

async fn login_with_sso(
    home: &Home,
    profile: Option<&str>,
    args: LoginArgs,
    connector: String,
) -> Result<Profile, ClientError> {
    let interactive = std::io::stdin().is_terminal();
    let gateway = args.gateway.clone();
    let browser = args.browser.unwrap_or(Browser::System);
    let request = SsoLogin {
        gateway: args.gateway.clone(),
        connector: Some(connector).filter(|c| !c.is_empty()),
        ca_pin: args.ca_pin.clone(),
        key_store: args.key_store,
        profile: profile.map(str::to_owned),
        timeout: args.timeout.unwrap_or(postern_client::sso::DEFAULT_TIMEOUT),
    };
    let show_url = |url: &str| {
        let opened = browser == Browser::System && open_browser(url).is_ok();
        if opened {
            println!("Your browser has been opened to sign in. If it did not open, visit:");
        } else {
            println!("Open this address in a browser to sign in:");
        }
        if !interactive && !std::io::stdout().is_terminal() && !has_display() {
            eprintln!(
                "This machine has no terminal and no display: to sign it in from another device, \
                 run `postern login {gateway} --sso --device` instead."
            );
        }
        println!("{url}");
        println!("Waiting for the sign-in to finish (Ctrl+C to stop)...");
        let _ = std::io::stdout().flush();
    };
    let login = login_sso(
        home,
        request,
        |fp| confirm_ca(&gateway, fp, interactive),
        show_url,
    );
    // Dropping the login closes its listener and writes nothing.
    tokio::select! {
        result = login => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::LoginCancelled),
    }
}

/// Whether a browser could show a window here: on Linux and the BSDs only
/// with an X11 or Wayland display.
fn has_display() -> bool {
    if cfg!(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd"
    )) {
        ["DISPLAY", "WAYLAND_DISPLAY"]
            .iter()
            .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
    } else {
        true
    }
}

async fn login_with_device(
    home: &Home,
    profile: Option<&str>,
    args: LoginArgs,
    connector: String,
) -> Result<Profile, ClientError> {
    let interactive = std::io::stdin().is_terminal();
    let gateway = args.gateway.clone();
    let request = DeviceLogin {
        gateway: args.gateway.clone(),
        connector: Some(connector).filter(|c| !c.is_empty()),
        ca_pin: args.ca_pin.clone(),
        key_store: args.key_store,
        profile: profile.map(str::to_owned),
    };
    let login = login_device(
        home,
        request,
        |fp| confirm_ca(&gateway, fp, interactive),
        show_device_prompt,
    );
    // Dropping the login stops polling and writes nothing.
    tokio::select! {
        result = login => result,
        _ = tokio::signal::ctrl_c() => Err(ClientError::LoginCancelled),
    }
}

fn show_device_prompt(prompt: &DevicePrompt) {
    println!("To sign in, open this address on any device:");
    println!("  {}", prompt.verification_uri);
    println!("and enter the code:");
    println!("  {}", prompt.user_code);
    println!("Then check that the page names this machine:");
    println!("  machine:          {}", prompt.hostname);
    println!("  key fingerprint:  {}", prompt.fingerprint);
    println!(
        "The code expires in {}.",
        humantime::format_duration(prompt.expires_in)
    );
    if let Some(qr) = output::qr_code(&prompt.verification_uri_complete) {
        println!("Or scan this code, which opens the page with the code filled in:");
        println!("{qr}");
    }
    println!("Waiting for the approval (Ctrl+C to stop)...");
    let _ = std::io::stdout().flush();
}

/// The manager's request for a command's target.
fn request(
    source: &SessionSource,
    target: &TargetArgs,
    db_roles: Vec<String>,
    port: Option<u16>,
    socket_dir: Option<&std::path::Path>,
) -> TunnelRequest {
    TunnelRequest {
        profile: source.profile_name().to_owned(),
        database: target.database.clone(),
        db_user: target.db_user.clone(),
        db_name: target.db_name.clone(),
        db_roles,
        port,
        socket_dir: socket_dir.map(ToOwned::to_owned),
    }
}

/// A tunnel only this command uses, for `db queries` and `db cancel`.
async fn private_tunnel(
    home: &Home,
    profile: Option<&str>,
    target: &TargetArgs,
) -> Result<(Arc<TunnelManager>, u64), ClientError> {
    let source = SessionSource::resolve(home.clone(), profile)?;
    let (manager, _guard_events) = TunnelManager::new(home.clone());
    let info = manager
        .start_private(request(&source, target, Vec::new(), None, None))
        .await?;
    Ok((manager, info.id))
}

/// The tunnel of `proxy db` and `db connect`: on its remembered port, with
/// the runaway guard when asked for (its events go to stderr).
async fn open_guarded(
    home: &Home,
    profile: Option<&str>,
    args: &TunnelArgs,
) -> Result<(Arc<TunnelManager>, TunnelInfo), ClientError> {
    let source = SessionSource::resolve(home.clone(), profile)?;
    let (manager, mut guard_events) = TunnelManager::new(home.clone());
    let info = manager
        .start(request(
            &source,
            &args.target,
            args.db_roles.clone(),
            args.port,
            args.socket.as_deref(),
        ))
        .await?;
    if let Some(notice) = &info.port_notice {
        eprintln!("postern: WARNING: {notice}");
    }
    let policy = GuardPolicy {
        warn_after: args.warn_after,
        cancel_after: args.cancel_after,
    };
    if policy.is_active() {
        manager.set_guard(info.id, policy).await?;
        tokio::spawn(async move {
            while let Some(e) = guard_events.recv().await {
                eprintln!("{}", output::guard_event(&e.event));
            }
        });
    }
    Ok((manager, info))
}

async fn proxy(home: &Home, profile: Option<&str>, args: TunnelArgs) -> Result<ExitCode, Failure> {
    let (manager, tunnel) = open_guarded(home, profile, &args).await?;
    println!(
        "Tunnel to database {:?} listening on {}",
        tunnel.request.database, tunnel.address
    );
    println!("Connect with:\n  {}", tunnel.endpoint().psql_command());
    println!("Any user name and no password work. Press Ctrl+C to stop.");
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    manager.stop_all().await;
    Ok(ExitCode::SUCCESS)
}

async fn connect(
    home: &Home,
    profile: Option<&str>,
    args: TunnelArgs,
) -> Result<ExitCode, Failure> {
    let (manager, tunnel) = open_guarded(home, profile, &args).await?;
    let conninfo = tunnel.endpoint().conninfo();
    let mut child = tokio::process::Command::new("psql")
        .arg(conninfo)
        .spawn()
        .map_err(ClientError::io(
            "starting psql (is it installed and on PATH?)",
        ))?;
    // Ctrl+C belongs to psql (it cancels the running query through the
    // tunnel); keep this process alive meanwhile.
    let status = loop {
        tokio::select! {
            status = child.wait() => break status.map_err(ClientError::io("waiting for psql"))?,
            _ = tokio::signal::ctrl_c() => continue,
        }
    };
    manager.stop_all().await;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    })
}

/// Why a command failed.
pub enum Failure {
    /// The client failed.
    Client(postern_client::ClientError),
    /// The flags given do not go together.
    Usage(&'static str),
}

impl From<postern_client::ClientError> for Failure {
    fn from(e: postern_client::ClientError) -> Self {
        Failure::Client(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e) => f.write_str(&output::error(e)),
            Failure::Usage(text) => f.write_str(text),
        }
    }
}
