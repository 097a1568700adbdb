//! `postern-gateway`: see [`postern_gateway::cmd`].

fn main() -> std::process::ExitCode {
    postern_gateway::cmd::run()
}
