//! Embeds the UI and declares the app's commands, so that capabilities
//! can grant exactly them (see capabilities/default.json).

use std::path::Path;

/// Keep in step with `COMMANDS` in crates/desktop-core/src/bindings.rs
/// (the e2e test calls every screen, and an ungranted command fails loudly).
const COMMANDS: &[&str] = &[
    "app_state",
    "gateway_info",
    "login_local",
    "login_sso",
    "cancel_sso",
    "use_profile",
    "sign_out",
    "databases",
    "suggest_port",
    "start_tunnel",
    "tunnels",
    "stop_tunnel",
    "set_favourite",
    "queries",
    "cancel_query",
    "set_guard",
    "open_pgadmin",
    "open_psql",
    "write_service",
    "copy_text",
    "autostart",
    "set_autostart",
];

fn main() {
    // The UI is built by `npm run build` in ui/. Without it (a plain `cargo
    // build --workspace`), embed a page that says so instead of failing.
    let dist = Path::new("../ui/dist");
    println!("cargo:rerun-if-changed=../ui/dist");
    if !dist.join("index.html").exists() {
        println!(
            "cargo:warning=ui/dist is missing: embedding a placeholder; run `npm --prefix ui ci && npm --prefix ui run build`"
        );
        std::fs::create_dir_all(dist).expect("create ui/dist");
        std::fs::write(
            dist.join("index.html"),
            "<!doctype html><meta charset=utf-8><title>Postern</title>\
             <p style=\"font:16px sans-serif;margin:3em\">The Postern UI was not built. \
             Run <code>npm --prefix ui ci &amp;&amp; npm --prefix ui run build</code>, then rebuild.</p>",
        )
        .expect("write placeholder");
    }
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(COMMANDS)),
    )
    .expect("tauri build");
}
