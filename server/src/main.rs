//! ironroot-server: entry point. Errors are reported with their whole cause
//! chain so an operator sees what failed (e.g. "wrong PIN for token 'x'").

use clap::Parser;
use ironroot_server::cli::{Cli, Command};
use ironroot_server::config::ServerConfig;
use ironroot_server::{client, run::Server};
use tracing_subscriber::EnvFilter;

fn init_logging(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = ServerConfig::load(&config)?;
            init_logging(&cfg.log_level);
            // HSM work blocks: open everything off the async threads.
            let server = tokio::task::spawn_blocking(move || Server::open(cfg)).await??;
            server.run().await
        }
        Command::Entry(c) => client::entry(c).await,
        Command::Bundle(c) => client::bundle(c).await,
        Command::X509(c) => client::x509(c).await,
        Command::Jwt(c) => client::jwt(c).await,
        Command::Token(c) => client::token(c).await,
        Command::Agent(c) => client::agent(c).await,
        Command::Policy(c) => client::policy(c),
        Command::Healthcheck { client: c } => client::healthcheck(c).await,
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
