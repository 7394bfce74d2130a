//! ironroot-agent. Node attestation and the Workload API land with the TPM and
//! agent issues; this binary only reports that.
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ironroot-agent",
    version,
    about = "ironroot agent (not yet implemented)"
)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    anyhow::bail!("ironroot-agent is not implemented yet: node attestation and the Workload API are tracked in the TPM and agent issues")
}
