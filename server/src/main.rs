//! ironroot-server: entry point. Errors are reported with their whole cause
//! chain so an operator sees what failed (e.g. "wrong PIN for token 'x'").

use std::process::ExitCode;

use clap::Parser;
use ironroot_server::boot_tools;
use ironroot_server::cli::{Cli, Command, PolicyCommand};
use ironroot_server::config::ServerConfig;
use ironroot_server::{client, run::Server};
use tracing_subscriber::EnvFilter;

ironroot_runtime::use_jemalloc!();

fn init_logging(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

/// Runs one command; its exit status (the offline boot tools have more than two).
async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    let done = |r: anyhow::Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Run { config } => {
            let cfg = ServerConfig::load(&config)?;
            init_logging(&cfg.log_level);
            // HSM work blocks: open everything off the async threads.
            let server = tokio::task::spawn_blocking(move || Server::open(cfg)).await??;
            done(server.run().await.map_err(anyhow::Error::from))
        }
        Command::Entry(c) => done(client::entry(c).await),
        Command::Bundle(c) => done(client::bundle(c).await),
        Command::X509(c) => done(client::x509(c).await),
        Command::Jwt(c) => done(client::jwt(c).await),
        Command::Token(c) => done(client::token(c).await),
        Command::Agent(c) => done(client::agent(c).await),
        Command::Policy(PolicyCommand::Check(args)) => Ok(boot_tools::policy_check(&args)),
        Command::Policy(c) => done(client::policy(c)),
        Command::Eventlog(c) => Ok(boot_tools::eventlog(c)),
        Command::Audit(c) => ironroot_server::audit::cli::audit(c),
        Command::Healthcheck { client: c } => done(client::healthcheck(c).await),
    }
}

/// The error and its causes in one line. The library's typed errors embed their causes'
/// text in their own message (an operator mostly sees one log line) and also expose them as
/// `source()`: once one of them is printed, the rest of the chain would repeat it. Context
/// added at this edge (and foreign errors) is followed by its cause, as `{:#}` would.
fn report(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if says_its_causes(cause) {
            break;
        }
    }
    parts.join(": ")
}

/// Whether `e` is one of the server's error types, whose message includes its causes.
fn says_its_causes(e: &(dyn std::error::Error + 'static)) -> bool {
    use ironroot_server::{admin, ca, config, node, run, store};
    e.is::<config::ConfigError>()
        || e.is::<run::StartError>()
        || e.is::<ca::CaError>()
        || e.is::<ca::devid_ca::DevIdCaError>()
        || e.is::<store::StoreError>()
        || e.is::<admin::AdminSocketError>()
        || e.is::<node::tls::IdentityError>()
        || e.is::<node::tpm::policies::PolicySetError>()
        || e.is::<node::tpm::anchors::AnchorsFileError>()
        || e.is::<ironroot_hsm::HsmError>()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", report(&e));
            ExitCode::FAILURE
        }
    }
}
