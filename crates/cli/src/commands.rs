//! One function per command, each a thin layer over `postern-client`.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;

use postern_api::wire::CatalogEntry;
use postern_client::ClientError;
use postern_client::api::GatewayClient;
use postern_client::connect::{ConnectRequest, prepare};
use postern_client::login::{LocalLogin, login_local, logout};
use postern_client::profile::Home;
use postern_client::queries::{CancelOutcome, Dialect, GuardPolicy, QueryHelper, run_guard};
use postern_client::session::{ActiveSession, SessionSource};
use postern_client::tunnel::{self, Dialer, PortNote, Tunnel, TunnelSpec};

use crate::output;
use crate::{Cli, Command, DbCommand, LoginArgs, ProxyCommand, TargetArgs, TunnelArgs};

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<ExitCode, ClientError> {
    let home = Home::from_env()?;
    let profile = cli.profile.as_deref();
    match cli.command {
        Command::Login(args) => login(&home, profile, args).await,
        Command::Status { format } => {
            let session = load_session(&home, profile).await?;
            output::status(&session, format);
            Ok(ExitCode::SUCCESS)
        }
        Command::Logout => {
            let p = logout(&home, profile)?;
            println!("Logged out of {} (profile {:?}).", p.gateway, p.name);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Ls { verbose, format }) => {
            let session = load_session(&home, profile).await?;
            let catalog = GatewayClient::for_session(&session)?.databases().await?;
            output::databases(&catalog, verbose, format);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Connect(args)) => connect(&home, profile, args).await,
        Command::Db(DbCommand::Queries { target, format }) => {
            let (tunnel, spec, entry) =
                open_tunnel(&home, profile, &target, Vec::new(), Listen::Ephemeral).await?;
            let helper = QueryHelper::connect(
                tunnel.addr(),
                spec.db_name.as_deref(),
                Dialect::for_kind(&entry.kind),
            )
            .await?;
            output::queries(&helper.list().await?, format);
            Ok(ExitCode::SUCCESS)
        }
        Command::Db(DbCommand::Cancel {
            target,
            pid,
            terminate,
        }) => {
            let (tunnel, spec, entry) =
                open_tunnel(&home, profile, &target, Vec::new(), Listen::Ephemeral).await?;
            let helper = QueryHelper::connect(
                tunnel.addr(),
                spec.db_name.as_deref(),
                Dialect::for_kind(&entry.kind),
            )
            .await?;
            let outcome = helper.cancel(pid, terminate).await?;
            println!("{}", output::cancel_outcome(pid, &outcome));
            Ok(match outcome {
                CancelOutcome::StillRunning => ExitCode::FAILURE,
                _ => ExitCode::SUCCESS,
            })
        }
        Command::Proxy(ProxyCommand::Db(args)) => proxy(&home, profile, args).await,
    }
}

async fn load_session(home: &Home, profile: Option<&str>) -> Result<ActiveSession, ClientError> {
    let home2 = home.clone();
    let name = profile.map(str::to_owned);
    let session = tokio::task::spawn_blocking(move || {
        let p = home2.resolve(name.as_deref())?;
        ActiveSession::load(&home2, p)
    })
    .await
    .map_err(|e| ClientError::Crypto(e.to_string()))??;
    session.ensure_valid()?;
    Ok(session)
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

async fn login(
    home: &Home,
    profile: Option<&str>,
    args: LoginArgs,
) -> Result<ExitCode, ClientError> {
    let interactive = !args.password_stdin && std::io::stdin().is_terminal();
    let password = read_password(args.password_stdin)?;
    let gateway = args.gateway.clone();
    let p = login_local(
        home,
        LocalLogin {
            gateway: args.gateway,
            username: args.user,
            password,
            ca_pin: args.ca_pin,
            key_store: args.key_store,
            profile: profile.map(str::to_owned),
        },
        |fp| confirm_ca(&gateway, fp, interactive),
    )
    .await?;
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

/// Where a command's tunnel listens.
enum Listen {
    /// The remembered port (or `--port`): a tunnel for other programs.
    Remembered(Option<u16>),
    /// Any free port: a tunnel only this command uses.
    Ephemeral,
}

/// Opens the tunnel for a command: session, catalog defaults, port.
async fn open_tunnel(
    home: &Home,
    profile: Option<&str>,
    target: &TargetArgs,
    db_roles: Vec<String>,
    listen: Listen,
) -> Result<(Tunnel, TunnelSpec, CatalogEntry), ClientError> {
    let session = load_session(home, profile).await?;
    let (spec, entry) = prepare(
        &session,
        ConnectRequest {
            database: target.database.clone(),
            db_user: target.db_user.clone(),
            db_name: target.db_name.clone(),
            db_roles,
        },
    )
    .await?;
    let listener = match listen {
        Listen::Remembered(port) => {
            let (listener, note) = tunnel::bind(home, &session.profile.name, &spec, port).await?;
            if let PortNote::RememberedTaken(old) = note {
                eprintln!(
                    "Port {old} (used last time) is taken; using {} instead.",
                    listener.local_addr().map(|a| a.port()).unwrap_or(0)
                );
            }
            listener
        }
        Listen::Ephemeral => tunnel::bind_ephemeral().await?,
    };
    let source = Arc::new(SessionSource::new(
        home.clone(),
        session.profile.name.clone(),
    ));
    let dialer = Arc::new(Dialer::new(source, session.profile.gateway.clone()));
    let tunnel = Tunnel::start(listener, dialer, spec.clone())?;
    Ok((tunnel, spec, entry))
}

/// Starts the runaway guard for a tunnel when asked for; its events go to stderr.
async fn start_guard(
    tunnel: &Tunnel,
    spec: &TunnelSpec,
    entry: &CatalogEntry,
    args: &TunnelArgs,
) -> Result<(), ClientError> {
    let policy = GuardPolicy {
        warn_after: args.warn_after,
        cancel_after: args.cancel_after,
    };
    if !policy.is_active() {
        return Ok(());
    }
    let helper = QueryHelper::connect(
        tunnel.addr(),
        spec.db_name.as_deref(),
        Dialect::for_kind(&entry.kind),
    )
    .await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(run_guard(helper, policy, tx));
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            eprintln!("{}", output::guard_event(&event));
        }
    });
    Ok(())
}

async fn proxy(
    home: &Home,
    profile: Option<&str>,
    args: TunnelArgs,
) -> Result<ExitCode, ClientError> {
    let (tunnel, spec, entry) = open_tunnel(
        home,
        profile,
        &args.target,
        args.db_roles.clone(),
        Listen::Remembered(args.port),
    )
    .await?;
    start_guard(&tunnel, &spec, &entry, &args).await?;
    let addr = tunnel.addr();
    println!("Tunnel to database {:?} listening on {addr}", spec.database);
    println!("Connect with:\n  {}", output::psql_command(addr, &spec));
    println!("Any user name and no password work. Press Ctrl+C to stop.");
    let _ = std::io::stdout().flush();
    let _ = tokio::signal::ctrl_c().await;
    tunnel.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn connect(
    home: &Home,
    profile: Option<&str>,
    args: TunnelArgs,
) -> Result<ExitCode, ClientError> {
    let (tunnel, spec, entry) = open_tunnel(
        home,
        profile,
        &args.target,
        args.db_roles.clone(),
        Listen::Remembered(args.port),
    )
    .await?;
    start_guard(&tunnel, &spec, &entry, &args).await?;
    let addr = tunnel.addr();
    let mut child = tokio::process::Command::new("psql")
        .args(output::psql_args(addr, &spec))
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
    tunnel.stop().await;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(c.clamp(1, 255) as u8),
        None => ExitCode::FAILURE,
    })
}
