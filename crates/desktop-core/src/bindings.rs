//! The TypeScript side of the IPC, generated from the Rust types: every view
//! type, the error, the event, and the `Commands` map (name → args, result)
//! that `ui/src/api.ts` is typed by. `ui/src/bindings.ts` is checked in; a
//! test fails when it is stale, and `UPDATE_BINDINGS=1 cargo test -p
//! postern-desktop-core bindings` rewrites it.

use ts_rs::{Config, TS};

use crate::error::{CommandError, ErrorKind};
use crate::views::*;

/// Name of the Tauri event that carries [`AppEvent`]s to the window.
pub const EVENT_NAME: &str = "postern://event";

/// Declares the commands once: their names (for the shell and the manifest)
/// and their TypeScript signatures. `()` as args means "no arguments".
macro_rules! commands {
    ($($name:ident($args:ty) -> $ret:ty;)*) => {
        /// Every command the UI may call, in declaration order.
        pub const COMMANDS: &[&str] = &[$(stringify!($name)),*];

        fn commands_ts(cfg: &Config) -> String {
            let mut s = String::from(
                "/** Every command: its arguments (`null`: none) and its result. */\nexport interface Commands {\n",
            );
            $(
                s.push_str(&format!(
                    "  {}: {{ args: {}; result: {} }};\n",
                    stringify!($name),
                    <$args as TS>::name(cfg),
                    <$ret as TS>::name(cfg),
                ));
            )*
            s.push_str("}\n");
            s
        }
    };
}

commands! {
    app_state(()) -> AppState;
    gateway_info(GatewayArgs) -> GatewayInfo;
    login_local(LoginLocalArgs) -> SessionView;
    login_sso(LoginSsoArgs) -> SessionView;
    cancel_sso(()) -> ();
    use_profile(ProfileArgs) -> AppState;
    sign_out(()) -> AppState;
    databases(()) -> Vec<DatabaseView>;
    suggest_port(PortArgs) -> PortSuggestion;
    start_tunnel(StartTunnelArgs) -> TunnelView;
    tunnels(()) -> Vec<TunnelView>;
    stop_tunnel(TunnelArgs) -> ();
    set_favourite(FavouriteArgs) -> TunnelView;
    queries(TunnelArgs) -> Vec<QueryView>;
    cancel_query(CancelArgs) -> CancelResult;
    set_guard(GuardArgs) -> TunnelView;
    open_pgadmin(TunnelArgs) -> LaunchResult;
    open_psql(TunnelArgs) -> LaunchResult;
    write_service(TunnelArgs) -> LaunchResult;
    copy_text(CopyArgs) -> ();
    autostart(()) -> bool;
    set_autostart(AutostartArgs) -> bool;
}

/// The whole generated file.
pub fn typescript() -> String {
    let cfg = Config::new().with_large_int("number");
    let mut out = String::from(
        "// Generated from crates/desktop-core (src/views.rs, src/error.rs, src/bindings.rs).\n\
         // Do not edit: run `UPDATE_BINDINGS=1 cargo test -p postern-desktop-core bindings`.\n\n",
    );
    macro_rules! decl {
        ($($t:ty),* $(,)?) => {
            $(
                if let Some(docs) = <$t as TS>::docs() {
                    out.push_str(&docs);
                    if !docs.ends_with('\n') { out.push('\n'); }
                }
                out.push_str("export ");
                out.push_str(&<$t as TS>::decl(&cfg));
                out.push_str("\n\n");
            )*
        };
    }
    decl!(
        ErrorKind,
        CommandError,
        ProfileView,
        TraitView,
        LoginMethod,
        SessionView,
        AppState,
        GatewayArgs,
        GatewayInfo,
        LoginLocalArgs,
        LoginSsoArgs,
        ProfileArgs,
        AllowedView,
        LabelView,
        ConnectChoice,
        DatabaseView,
        PortArgs,
        PortSuggestion,
        StartTunnelArgs,
        TunnelView,
        TunnelArgs,
        FavouriteArgs,
        GuardArgs,
        QueryView,
        CancelArgs,
        CancelOutcomeView,
        CancelResult,
        LaunchResult,
        CopyArgs,
        AutostartArgs,
        GuardAction,
        AppEvent,
    );
    out.push_str(&commands_ts(&cfg));
    out.push_str(&format!(
        "\n/** The Tauri event that carries `AppEvent`s. */\nexport const EVENT_NAME = \"{EVENT_NAME}\";\n"
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_in_ui_are_up_to_date() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ui/src/bindings.ts");
        let fresh = typescript();
        if std::env::var_os("UPDATE_BINDINGS").is_some() {
            std::fs::write(&path, &fresh).unwrap();
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            checked_in == fresh,
            "ui/src/bindings.ts is stale: run `UPDATE_BINDINGS=1 cargo test -p postern-desktop-core bindings`"
        );
    }

    /// The shell registers, declares and grants exactly these commands.
    #[test]
    fn the_shell_registers_declares_and_grants_every_command() {
        let shell = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../src-tauri");
        let read = |f: &str| std::fs::read_to_string(shell.join(f)).unwrap();
        let (build, lib, caps) = (
            read("build.rs"),
            read("src/lib.rs"),
            read("capabilities/default.json"),
        );
        let handler = lib
            .split("generate_handler![")
            .nth(1)
            .and_then(|rest| rest.split(']').next())
            .unwrap();
        let registered: Vec<&str> = handler
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(
            registered, COMMANDS,
            "src-tauri/src/lib.rs generate_handler!"
        );
        for name in COMMANDS {
            assert!(build.contains(&format!("\"{name}\"")), "{name} in build.rs");
            let permission = format!("\"allow-{}\"", name.replace('_', "-"));
            assert!(caps.contains(&permission), "{permission} in capabilities");
        }
        // The commands, and listening to events: nothing more.
        assert_eq!(caps.matches("\"allow-").count(), COMMANDS.len());
        assert_eq!(caps.matches("\"core:").count(), 2);
    }

    #[test]
    fn large_numbers_are_plain_numbers_and_options_are_nullable() {
        let ts = typescript();
        assert!(!ts.contains("bigint"), "{ts}");
        assert!(ts.contains("db_user: string | null"));
        assert!(ts.contains("login_local: { args: LoginLocalArgs; result: SessionView };"));
        assert!(ts.contains("app_state: { args: null; result: AppState };"));
    }
}
