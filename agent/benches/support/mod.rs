//! Set-up shared by the bench binaries: the release server on a private
//! SoftHSM token with the TPM attestor, a policy generated from the simulated
//! boot, and the EK CA of a swtpm state.
#![allow(dead_code)] // each bench binary uses a different subset

pub(crate) mod agent;

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::time::Duration;

use ironroot_agent::simulate::{event_log, SimulatedBoot};
use ironroot_testkit::server::NodeApiServer;
use ironroot_testkit::swtpm::SwtpmState;
use ironroot_tpm::verify::eventlog::EventLog;
use ironroot_tpm::verify::policy::generate_policy;

/// The bench server ([`NodeApiServer`], its fields through `Deref`), the TPM state's EK CA
/// it trusts, and the simulated boot its default policy "bench" came from.
pub(crate) struct BenchServer {
    pub node: NodeApiServer,
    /// The EK CA bundle the server uses.
    pub ek_ca: PathBuf,
    /// The simulated boot's event log the policy was generated from.
    pub log: Vec<u8>,
}

impl Deref for BenchServer {
    type Target = NodeApiServer;

    fn deref(&self) -> &NodeApiServer {
        &self.node
    }
}

impl DerefMut for BenchServer {
    fn deref_mut(&mut self) -> &mut NodeApiServer {
        &mut self.node
    }
}

/// Starts the server for TPMs manufactured as `state`, policy "bench" by default.
pub(crate) fn start(state: &SwtpmState, name: &str) -> BenchServer {
    let log = event_log(&SimulatedBoot::default());
    let policy = generate_policy("bench", &EventLog::parse(&log).expect("log"));
    let ek_ca = state.ek_ca_bundle();
    let node = NodeApiServer::start(
        name,
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"bench\"",
            ek_ca.display()
        ),
        &[("bench", policy.to_toml().expect("toml"))],
        // Every run attests from 127.0.0.1, back to back: no per-address limit may pace it.
        "[node_api.limits]\nattestations_per_ip_per_second = 1000000.0\nattestation_burst = 100000\n\
         signings_per_ip_per_second = 1000000.0\nsigning_burst = 100000",
    );
    BenchServer { node, ek_ca, log }
}

/// The `p` quantile (0..=1) of sorted samples, nearest rank.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A duration in milliseconds, three decimals.
pub(crate) fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}
