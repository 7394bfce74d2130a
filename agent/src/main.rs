//! ironroot-agent: node attestation with the TPM (tpm_ek, tpm_devid) or a
//! join token, then `run` serves the Workload API and Envoy SDS.

use ironroot_agent::refused::{RefusalKind, Refused};
use ironroot_agent::{attest, config, simulate};

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};
use tracing::error;
use tracing_subscriber::EnvFilter;

use config::AgentConfig;

ironroot_runtime::use_jemalloc!();

#[derive(Parser)]
#[command(
    name = "ironroot-agent",
    version,
    about = "ironroot agent: TPM node attestation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Copy, Clone, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Attest, keep the agent SVID in data_dir, and re-attest (fresh quote) at half life.
    Run {
        #[arg(short, long, default_value = "/etc/ironroot/agent.toml")]
        config: PathBuf,
    },
    /// Attest once, write the agent SVID to data_dir, print the result.
    Attest {
        #[arg(short, long, default_value = "/etc/ironroot/agent.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// TPM facts and DevID provisioning.
    #[command(subcommand)]
    Tpm(TpmCommand),
    /// Call the Workload API (as a workload would).
    #[command(subcommand)]
    Api(ApiCommand),
    /// Check that the agent answers on its Workload API socket.
    Healthcheck {
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(Subcommand)]
enum ApiCommand {
    /// Fetch SVIDs and bundles.
    #[command(subcommand)]
    Fetch(FetchCommand),
    /// Validate a JWT-SVID.
    #[command(subcommand)]
    Validate(ValidateCommand),
}

#[derive(clap::Args, Clone)]
struct SocketArg {
    /// Workload API socket.
    #[arg(
        short = 's',
        long,
        env = "SPIFFE_ENDPOINT_SOCKET",
        default_value = "/run/ironroot/agent/public/api.sock"
    )]
    socket_path: PathBuf,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Subcommand)]
enum FetchCommand {
    /// The X.509-SVIDs of the caller.
    X509 {
        #[command(flatten)]
        socket: SocketArg,
        /// Write svid.pem, svid.key and bundle.pem of the first SVID here.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// A JWT-SVID for an audience.
    Jwt {
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
        #[arg(long, default_value = "")]
        spiffe_id: String,
    },
    /// The JWT bundles.
    JwtBundles {
        #[command(flatten)]
        socket: SocketArg,
    },
}

#[derive(Subcommand)]
enum ValidateCommand {
    /// Validate a JWT-SVID for an audience.
    Jwt {
        #[command(flatten)]
        socket: SocketArg,
        #[arg(long)]
        audience: String,
        #[arg(long)]
        svid: String,
    },
}

fn socket_path(s: &SocketArg) -> PathBuf {
    // SPIFFE_ENDPOINT_SOCKET may be a unix: URI.
    let p = s.socket_path.to_string_lossy();
    PathBuf::from(
        p.strip_prefix("unix://")
            .or_else(|| p.strip_prefix("unix:"))
            .unwrap_or(&p),
    )
}

async fn api(cmd: ApiCommand) -> anyhow::Result<()> {
    use ironroot_agent::api_client as c;
    match cmd {
        ApiCommand::Fetch(FetchCommand::X509 { socket, write }) => {
            let r = c::fetch_x509(&socket_path(&socket)).await?;
            if let Some(dir) = &write {
                c::write_x509(&r, dir)?;
            }
            if socket.output == Output::Json {
                let v: Vec<_> = r
                    .svids
                    .iter()
                    .map(|s| serde_json::json!({"spiffe_id": s.spiffe_id, "hint": s.hint}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({ "svids": v }))?
                );
            } else {
                println!("Received {} svid(s)", r.svids.len());
                for s in &r.svids {
                    println!("SPIFFE ID        : {}", s.spiffe_id);
                }
            }
            Ok(())
        }
        ApiCommand::Fetch(FetchCommand::Jwt {
            socket,
            audience,
            spiffe_id,
        }) => {
            let r = c::fetch_jwt(&socket_path(&socket), audience, spiffe_id).await?;
            for s in &r.svids {
                if socket.output == Output::Json {
                    println!(
                        "{}",
                        serde_json::json!({"spiffe_id": s.spiffe_id, "token": s.svid})
                    );
                } else {
                    println!("{}", s.svid);
                }
            }
            Ok(())
        }
        ApiCommand::Fetch(FetchCommand::JwtBundles { socket }) => {
            let r = c::fetch_jwt_bundles(&socket_path(&socket)).await?;
            for (td, jwks) in &r.bundles {
                println!("{td}: {}", String::from_utf8_lossy(jwks));
            }
            Ok(())
        }
        ApiCommand::Validate(ValidateCommand::Jwt {
            socket,
            audience,
            svid,
        }) => {
            let r = c::validate_jwt(&socket_path(&socket), audience, svid).await?;
            println!("SVID is valid. SPIFFE ID: {}", r.spiffe_id);
            Ok(())
        }
    }
}

#[derive(Subcommand)]
enum TpmCommand {
    /// Show the EK (hash, certificate) and the AK.
    Info {
        #[arg(short, long, default_value = "/etc/ironroot/agent.toml")]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Labs only: write a simulated boot's event log and extend a software TPM's PCRs to match.
    SimulateBoot {
        #[arg(short, long, default_value = "/etc/ironroot/agent.toml")]
        config: PathBuf,
        /// Kernel command line of the simulated boot.
        #[arg(long, default_value = "console=ttyS0 root=/dev/vda1 ro")]
        cmdline: String,
    },
    /// Make (or reuse) the TPM-resident DevID key and write a CSR for a DevID CA.
    ProvisionDevid {
        #[arg(short, long, default_value = "/etc/ironroot/agent.toml")]
        config: PathBuf,
        /// Subject common name of the DevID (e.g. the device serial number).
        #[arg(long)]
        subject_cn: String,
        /// Where to write the CSR (PEM).
        #[arg(long)]
        csr: PathBuf,
    },
}

fn init_logging(level: &str) {
    // tss-esapi logs every context open/close at info: keep it quiet unless asked.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},tss_esapi=warn")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn print_outcome(o: &attest::AttestOutcome, output: Output) -> anyhow::Result<()> {
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "spiffe_id": o.spiffe_id,
                "selectors": o.selectors,
                "boot_policy": o.boot_policy,
                "expires_at": o.expires_at,
                "agent_key": o.key.kind(),
            }))?
        );
    } else {
        println!("Agent ID         : {}", o.spiffe_id);
        println!(
            "Boot policy      : {}",
            if o.boot_policy.is_empty() {
                "-"
            } else {
                &o.boot_policy
            }
        );
        println!(
            "SVID expires at  : {}",
            ironroot_runtime::human::instant_from_now(o.expires_at)
        );
        println!("Agent key        : {}", o.key.kind());
        for s in &o.selectors {
            println!("Selector         : {s}");
        }
    }
    Ok(())
}

fn tpm_info(cfg: &AgentConfig, output: Output) -> anyhow::Result<()> {
    let tpm = ironroot_agent::shared_tpm::SharedTpm::new(&cfg.tpm.tcti);
    let ek = tpm.with(|t| t.endorsement_key(cfg.tpm.ek.algorithm()))?;
    let parsed = ironroot_tpm::verify::TpmPublic::from_tpm2b(&ek.public)?;
    let ek_hash = hex::encode(Sha256::digest(parsed.spki_der()?));
    let agent_id = ironroot_api::spiffe_id::SpiffeId::agent(&cfg.trust_domain, "tpm_ek", &ek_hash)?;
    if output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "tcti": cfg.tpm.tcti,
                "ek_algorithm": cfg.tpm.ek.name(),
                "ek_hash": ek_hash,
                "ek_certificate": ek.certificate.is_some(),
                "agent_id_tpm_ek": agent_id.to_string(),
            }))?
        );
    } else {
        println!("TCTI             : {}", cfg.tpm.tcti);
        println!("EK               : {}", cfg.tpm.ek);
        println!("EK hash          : {ek_hash}");
        println!(
            "EK certificate   : {}",
            if ek.certificate.is_some() {
                "present"
            } else {
                "absent"
            }
        );
        println!("tpm_ek agent ID  : {agent_id}");
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run { config } => {
            let cfg = AgentConfig::load(&config)?;
            init_logging(&cfg.log_level);
            Ok(ironroot_agent::runtime::run(cfg).await?)
        }
        Command::Attest { config, output } => {
            let cfg = AgentConfig::load(&config)?;
            init_logging(&cfg.log_level);
            let outcome = attest::attest(&cfg).await.context("attestation failed")?;
            outcome.save(&cfg)?;
            print_outcome(&outcome, output)
        }
        Command::Api(cmd) => api(cmd).await,
        Command::Healthcheck { socket } => {
            let path = socket_path(&socket);
            let mut c = ironroot_agent::api_client::connect(&path).await?;
            // Any gRPC answer (even "no identity issued") means the agent is serving.
            if let Err(s) = c
                .fetch_x509_bundles(ironroot_agent::api_client::request(
                    ironroot_api::workload::X509BundlesRequest {},
                ))
                .await
            {
                let refused = Refused::from(s);
                if refused.kind() == RefusalKind::Unreachable {
                    anyhow::bail!(
                        "the agent at {} does not answer: {}",
                        path.display(),
                        refused.message()
                    )
                }
            }
            if socket.output == Output::Json {
                println!("{}", serde_json::json!({"healthy": true, "socket": path}));
            } else {
                println!("Agent is healthy ({})", path.display());
            }
            Ok(())
        }
        Command::Tpm(TpmCommand::Info { config, output }) => {
            let cfg = AgentConfig::load(&config)?;
            tpm_info(&cfg, output)
        }
        Command::Tpm(TpmCommand::SimulateBoot { config, cmdline }) => {
            let cfg = AgentConfig::load(&config)?;
            let log = simulate::event_log(&simulate::SimulatedBoot {
                cmdline: &cmdline,
                ..Default::default()
            });
            let n = simulate::replay_into(&cfg.tpm.tcti, &log)?;
            std::fs::write(&cfg.tpm.event_log_path, &log)
                .with_context(|| format!("cannot write {}", cfg.tpm.event_log_path.display()))?;
            println!(
                "simulated boot: {n} measurements extended into {}, event log written to {}",
                cfg.tpm.tcti,
                cfg.tpm.event_log_path.display()
            );
            Ok(())
        }
        Command::Tpm(TpmCommand::ProvisionDevid {
            config,
            subject_cn,
            csr,
        }) => {
            let cfg = AgentConfig::load(&config)?;
            let der = attest::provision_devid(&cfg, &subject_cn)?;
            std::fs::write(
                &csr,
                pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)),
            )
            .with_context(|| format!("cannot write {}", csr.display()))?;
            println!("DevID CSR written to {}", csr.display());
            Ok(())
        }
    }
}

/// Each workload connection holds a socket and a pidfd: raise the soft
/// open-file limit to the hard one so a busy node does not hit EMFILE at ~500.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    raise_fd_limit();
    // Attestors run on blocking threads: a burst of workloads must not become
    // hundreds of OS threads.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(16)
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
            error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
