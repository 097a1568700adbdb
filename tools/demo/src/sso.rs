//! `scripts/demo --sso`: single sign-on against the identity provider the
//! tests use (`oidc-provider` on Node.js, `tests/idp`), with one sample
//! person whose group maps to the demo role, registered as the gateway's
//! connector.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use postern_tests::idp::{Account, Idp, IdpPlan};
use serde_json::json;
use tokio::process::Command;

use crate::{has_content, log, read_secret, write_private};

/// The connector's name (`postern login --sso demo-idp`).
pub const CONNECTOR: &str = "demo-idp";
/// The sample person at the identity provider.
pub const PERSON: &str = "ada";
/// Their group, which `claims_to_roles` maps to the demo role.
const GROUP: &str = "data-team";

/// The provider, planned before the gateway starts (its connector names
/// the provider's address) and started before it (the gateway checks the
/// connector when it starts).
pub struct Sso {
    plan: IdpPlan,
    /// The sample person's password (`sso.pw`).
    pub password: String,
    /// Where the password is.
    pub password_file: PathBuf,
}

impl Sso {
    /// Plans the provider; the person's password is made on the first run.
    pub fn plan(dir: &Path) -> anyhow::Result<Sso> {
        let password_file = dir.join("sso.pw");
        if !has_content(&password_file) {
            write_private(
                &password_file,
                &format!("{}\n", postern_tests::random_hex(8)),
            )?;
        }
        Ok(Sso {
            plan: IdpPlan::new(),
            password: read_secret(&password_file)?,
            password_file,
        })
    }

    /// The gateway's `connectors:` block.
    pub fn connector_yaml(&self) -> String {
        self.plan.connector_yaml(
            CONNECTOR,
            &[&format!(
                "{{ claim: groups, value: {GROUP}, roles: [demo] }}"
            )],
        )
    }

    /// The provider's issuer URL.
    pub fn issuer(&self) -> String {
        self.plan.issuer()
    }

    /// Starts the provider for a gateway whose public URL is
    /// `https://localhost:GATEWAY_PORT`.
    pub async fn start(self, root: &Path, gateway_port: u16) -> anyhow::Result<Idp> {
        let idp_dir = root.join("tests/idp");
        if !idp_dir.join("node_modules/oidc-provider").is_dir() {
            log("installing the test identity provider (npm ci in tests/idp)");
            crate::run(
                Command::new("npm")
                    .args(["ci", "--no-audit", "--no-fund", "--silent"])
                    .current_dir(&idp_dir),
            )
            .await
            .context("install oidc-provider")?;
        }
        log(format!(
            "starting the identity provider on {} (oidc-provider; person {PERSON})",
            self.plan.issuer()
        ));
        // The fixture's accounts live as long as the process.
        let password: &'static str = Box::leak(self.password.into_boxed_str());
        let person = Account {
            name: PERSON,
            password,
            claims: json!({ "groups": [GROUP], "email": "ada@example.com" }),
        };
        let callback = format!("https://localhost:{gateway_port}/v1/login/sso/callback");
        Ok(self.plan.start(&[callback], &[person]).await)
    }
}
