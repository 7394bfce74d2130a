//! Set-up shared by the bench binaries: the release server on a private
//! SoftHSM token with the TPM attestor, a policy generated from the simulated
//! boot, and the EK CA of a swtpm state.
#![allow(dead_code)] // each bench binary uses a different subset

pub(crate) mod agent;

use std::path::PathBuf;
use std::time::Duration;

use ironroot_agent::simulate::{event_log, SimulatedBoot};
use ironroot_testkit::server::{server_config, ServerProcess, SoftHsm};
use ironroot_testkit::swtpm::SwtpmState;
use ironroot_tpm::verify::eventlog::EventLog;
use ironroot_tpm::verify::policy::generate_policy;

pub(crate) struct BenchServer {
    pub dir: tempfile::TempDir,
    pub server: ServerProcess,
    /// Node API address.
    pub address: String,
    /// The server's bundle (PEM), the agents' bootstrap bundle.
    pub bundle: PathBuf,
    /// The EK CA bundle and the policies dir the server uses.
    pub ek_ca: PathBuf,
    pub policies: PathBuf,
    /// The simulated boot's event log the policy was generated from.
    pub log: Vec<u8>,
    _hsm: SoftHsm,
}

/// Starts the server for TPMs manufactured as `state`, policy "bench" by default.
pub(crate) fn start(state: &SwtpmState, name: &str) -> BenchServer {
    let log = event_log(&SimulatedBoot::default());
    let policy = generate_policy("bench", &EventLog::parse(&log).expect("log"));
    let dir = tempfile::tempdir().expect("tempdir");
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).expect("policies");
    std::fs::write(policies.join("bench.toml"), policy.to_toml().expect("toml")).expect("policy");
    let ek_ca = dir.path().join("ek-ca.pem");
    let mut pem = std::fs::read_to_string(&state.ca_root_cert).expect("root");
    pem.push_str(&std::fs::read_to_string(&state.issuer_cert).expect("issuer"));
    std::fs::write(&ek_ca, pem).expect("ek ca");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let extra = format!(
        "[node_api]\nlisten = \"127.0.0.1:{port}\"\n\n[node_attestors.tpm]\nek_ca_bundle = \"{}\"\npolicies_dir = \"{}\"\ndefault_policy = \"bench\"\n",
        ek_ca.display(),
        policies.display()
    );
    let conf = server_config(dir.path(), &hsm, "ca", &extra);
    let server = ServerProcess::start(name, &conf, &hsm, &dir.path().join("admin.sock"));
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, server.cli_ok(&["bundle", "show"])).expect("bundle");
    BenchServer {
        dir,
        server,
        address: format!("127.0.0.1:{port}"),
        bundle,
        ek_ca,
        policies,
        log,
        _hsm: hsm,
    }
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
