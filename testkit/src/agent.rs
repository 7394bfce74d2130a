//! The real agent binary, `ironroot-agent run`, as a child process attesting with `tpm_ek`
//! to a [`NodeApiServer`] or with a join token: killed by PID on drop, its log where the
//! caller says.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::server::{NodeApiServer, TD};

/// The agent binary cargo built beside the test or bench (`target/<profile>/ironroot-agent`),
/// or `$IRONROOT_AGENT_BIN` ([`crate::workspace_bin`]).
pub fn agent_bin() -> PathBuf {
    crate::workspace_bin("ironroot-agent", "IRONROOT_AGENT_BIN")
}

/// How to start an agent ([`AgentProcess::start`]).
#[derive(Debug)]
pub struct AgentSpec<'a> {
    /// The server it attests to (its address and trust bundle).
    pub server: &'a NodeApiServer,
    /// The TPM's TCTI (`swtpm:host=127.0.0.1,port=N`); the EK used is the RSA one.
    pub tcti: &'a str,
    /// The firmware event log the agent reads (`tpm.event_log_path`).
    pub event_log: &'a [u8],
    /// The agent's directory (config, data, event log, socket) under the server's `dir`.
    pub name: &'a str,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    /// Its `log_level`.
    pub log_level: &'a str,
    /// TOML appended to its config, inside its `[workload_api]` section unless it opens
    /// another one.
    pub extra: &'a str,
}

/// How to start a join_token agent ([`AgentProcess::start_join_token`]): no TPM.
#[derive(Debug)]
pub struct JoinTokenAgentSpec<'a> {
    /// The servers it dials, in order (`server_addresses`).
    pub servers: &'a [&'a str],
    /// The trust bundle it starts from.
    pub bundle: &'a Path,
    /// A single-use token (`ServerProcess::join_token`).
    pub token: &'a str,
    /// The agent's directory: its config, its data dir (`data`) and its Workload API
    /// socket (`api.sock`).
    pub dir: PathBuf,
    /// Where its stdout and stderr go (plain text: `NO_COLOR`).
    pub log: PathBuf,
    /// TOML appended to its config, inside its `[workload_api]` section unless it opens
    /// another one.
    pub extra: &'a str,
}

/// `ironroot-agent run` as a child process, killed by PID on drop.
#[derive(Debug)]
pub struct AgentProcess {
    /// The process.
    pub child: Child,
    /// The Workload API socket (`<dir>/sock/api.sock`).
    pub socket: PathBuf,
    /// The agent's directory (its data dir is `<dir>/data`).
    pub dir: PathBuf,
}

impl AgentProcess {
    /// Writes the agent's config and event log into `<server dir>/<name>` and starts it, not
    /// waiting for anything. The server's dir, the agent's dir and its socket's dir are made
    /// traversable by every uid, so workloads of any uid reach the socket.
    pub fn start(spec: &AgentSpec<'_>) -> AgentProcess {
        let server_dir = spec.server.dir.path();
        let dir = server_dir.join(spec.name);
        let sock_dir = dir.join("sock");
        std::fs::create_dir_all(&sock_dir)
            .unwrap_or_else(|e| panic!("{}: {e}", sock_dir.display()));
        for d in [server_dir, dir.as_path(), sock_dir.as_path()] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", d.display()));
        }
        let event_log = dir.join("eventlog.bin");
        write(&event_log, spec.event_log);
        let socket = sock_dir.join("api.sock");
        let conf = dir.join("agent.toml");
        let text = format!(
            "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ntrust_bundle_path = \"{}\"\n\
             data_dir = \"{}\"\nnode_attestor = \"tpm_ek\"\nlog_level = \"{}\"\n\n\
             [tpm]\ntcti = \"{}\"\nevent_log_path = \"{}\"\nek = \"rsa\"\n\n\
             [workload_api]\nsocket_path = \"{}\"\n{}\n",
            spec.server.address,
            spec.server.bundle.display(),
            dir.join("data").display(),
            spec.log_level,
            spec.tcti,
            event_log.display(),
            socket.display(),
            spec.extra,
        );
        write(&conf, text.as_bytes());
        let child = spawn_logged(&conf, &spec.log);
        AgentProcess { child, socket, dir }
    }

    /// Writes a join_token agent's config into `spec.dir` and starts it at `debug` level, not
    /// waiting for anything.
    pub fn start_join_token(spec: &JoinTokenAgentSpec<'_>) -> AgentProcess {
        std::fs::create_dir_all(&spec.dir)
            .unwrap_or_else(|e| panic!("{}: {e}", spec.dir.display()));
        let socket = spec.dir.join("api.sock");
        let conf = spec.dir.join("agent.toml");
        let servers = spec
            .servers
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "trust_domain = \"{TD}\"\nserver_addresses = [{servers}]\ntrust_bundle_path = \"{}\"\n\
             data_dir = \"{}\"\nnode_attestor = \"join_token\"\njoin_token = \"{}\"\n\
             log_level = \"debug\"\n\n[workload_api]\nsocket_path = \"{}\"\n{}\n",
            spec.bundle.display(),
            spec.dir.join("data").display(),
            spec.token,
            socket.display(),
            spec.extra,
        );
        write(&conf, text.as_bytes());
        let child = spawn_logged(&conf, &spec.log);
        AgentProcess {
            child,
            socket,
            dir: spec.dir.clone(),
        }
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ironroot-agent run -c conf`, stdout and stderr to `log` as plain text.
fn spawn_logged(conf: &Path, log: &Path) -> Child {
    let logf = std::fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let errf = logf
        .try_clone()
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    Command::new(agent_bin())
        .args(["run", "-c"])
        .arg(conf)
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(logf))
        .stderr(Stdio::from(errf))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", agent_bin().display()))
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::write(p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}
