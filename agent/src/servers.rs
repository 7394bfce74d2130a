//! The servers of the trust domain the agent talks to, and which one it uses now.
//!
//! The config lists them (`server_addresses`, or `server_address` for one); every
//! `host:port` is resolved, and a name with several addresses counts as several servers. Each
//! server presents the same identity (`spiffe://<td>/spire/server`, under the same trust
//! bundle), and the agent's SVID from one is good at every other, so any of them will do:
//!
//! - the agent stays on the server that answered last;
//! - a connection attempt tries every server once, from the current one on, and keeps the
//!   first that completes the TLS handshake: a dead server (connection refused or reset, a
//!   failed handshake, a timeout) is passed over within the same attempt;
//! - a session that fails after connecting (the server went away, an RPC failed) moves the
//!   agent to the next server ([`Servers::failed`]); the caller waits its jittered backoff
//!   before connecting again;
//! - when every server failed, the names are resolved again at the next attempt, so a
//!   change in DNS is picked up.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};

use ironroot_runtime::report::Chain;
use tracing::{info, warn};

use crate::config::{AgentConfig, ServerAddress};
use crate::connect::ConnectError;

/// One server: the address as configured and one address it resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// As written in the config (a name, or an IP address, with the port).
    pub configured: ServerAddress,
    /// Where to dial.
    pub socket: SocketAddr,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dialled = self.socket.to_string();
        if *self.configured == dialled {
            f.write_str(&dialled)
        } else {
            write!(f, "{} ({dialled})", self.configured)
        }
    }
}

/// The servers of the trust domain, resolved, and where the next connection starts.
#[derive(Debug)]
pub struct Servers {
    configured: Vec<ServerAddress>,
    round: Mutex<Round>,
}

#[derive(Debug, Default)]
struct Round {
    /// Every resolved server, in config order; empty: resolve before the next attempt.
    servers: Vec<Server>,
    /// The one to try first.
    current: usize,
}

impl Servers {
    /// The servers at `configured`, in that order.
    pub fn new(configured: &[ServerAddress]) -> Self {
        Servers {
            configured: configured.to_vec(),
            round: Mutex::new(Round::default()),
        }
    }

    /// The servers of `cfg` ([`AgentConfig::servers`]).
    pub fn from_config(cfg: &AgentConfig) -> Self {
        Servers::new(cfg.servers())
    }

    fn round(&self) -> std::sync::MutexGuard<'_, Round> {
        // A panic elsewhere leaves at worst a stale cursor.
        self.round.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Resolves every configured address, in order, each resolved address once. A name
    /// that does not resolve is left out (and named when none resolves at all).
    pub async fn resolve(&self) -> Result<Vec<Server>, ConnectError> {
        if self.configured.is_empty() {
            return Err(ConnectError::NoServerAddress);
        }
        let mut servers: Vec<Server> = Vec::new();
        let mut failures = Vec::new();
        for configured in &self.configured {
            match tokio::net::lookup_host(&**configured).await {
                Ok(addrs) => {
                    for socket in addrs {
                        if !servers.iter().any(|s| s.socket == socket) {
                            servers.push(Server {
                                configured: configured.clone(),
                                socket,
                            });
                        }
                    }
                }
                Err(source) => {
                    warn!(address = %configured, error = %source, "cannot resolve a server address");
                    failures.push(ConnectError::Resolve {
                        address: configured.to_string(),
                        source,
                    });
                }
            }
        }
        if servers.is_empty() {
            return Err(none_answered(failures));
        }
        Ok(servers)
    }

    /// Dials the servers with `dial`, from the current one on, each once, until one
    /// answers; the agent stays on that one. Fails when none does, with every reason.
    pub async fn connect<T, F, Fut>(&self, mut dial: F) -> Result<(T, Server), ConnectError>
    where
        F: FnMut(Server) -> Fut,
        Fut: Future<Output = Result<T, ConnectError>>,
    {
        let (servers, start) = {
            let round = self.round();
            (round.servers.clone(), round.current)
        };
        let servers = if servers.is_empty() {
            let resolved = self.resolve().await?;
            let mut round = self.round();
            round.servers = resolved.clone();
            round.current = 0;
            resolved
        } else {
            servers
        };
        let n = servers.len();
        let mut failures = Vec::new();
        for i in 0..n {
            let at = (start + i) % n;
            let server = servers[at].clone();
            match dial(server.clone()).await {
                Ok(t) => {
                    let mut round = self.round();
                    if round.servers == servers && round.current != at {
                        info!(server = %server, "now using this server");
                        round.current = at;
                    }
                    return Ok((t, server));
                }
                Err(e) => {
                    if n > 1 {
                        warn!(server = %server, "cannot reach the server, trying the next one: {}", Chain(&e));
                    }
                    failures.push(e);
                }
            }
        }
        // None answered: resolve again next time (DNS may have moved them).
        *self.round() = Round::default();
        Err(none_answered(failures))
    }

    /// The session with `server` failed after it connected: the next connection starts
    /// with the server after it.
    pub fn failed(&self, server: &Server) {
        let mut round = self.round();
        let Some(at) = round.servers.iter().position(|s| s == server) else {
            return;
        };
        if round.servers.len() > 1 {
            let next = (at + 1) % round.servers.len();
            info!(failed = %server, next = %round.servers[next], "moving to the next server");
            round.current = next;
        }
    }
}

/// One failure as it is, several as one error naming each.
fn none_answered(mut failures: Vec<ConnectError>) -> ConnectError {
    if failures.len() == 1 {
        if let Some(e) = failures.pop() {
            return e;
        }
    }
    ConnectError::NoServerAnswered {
        failures: failures.iter().map(|e| Chain(e).to_string()).collect(),
    }
}

#[cfg(test)]
mod tests;
