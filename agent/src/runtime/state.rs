//! The agent's life with its server, as an explicit state machine. Every
//! transition is in [`Agent::step`]; each state carries what it needs (the agent
//! SVID in use, the delay to wait), so nothing else holds state between steps
//! but the backoffs and the agent key.
//!
//! ```text
//! Attesting      ── attested ─────────────> Syncing
//! Attesting      ── failed ───────────────> AttestBackoff ──> Attesting
//! Syncing        ── SVID expired ─────────> Attesting
//! Syncing        ── half life, TPM ───────> Attesting
//! Syncing        ── half life, join_token ─> Renewing
//! Syncing        ── SVID refused, TPM ────> Attesting
//! Syncing        ── failed ───────────────> SyncBackoff ──> Syncing
//! Renewing       ── renewed ──────────────> Syncing (the new SVID)
//! Renewing       ── failed ───────────────> RenewalBackoff ──> Syncing
//! ```
//!
//! A TPM agent renews by attesting again (a fresh quote); a join_token agent,
//! whose token is spent, renews over mTLS with the SVID it holds.

use std::time::Duration;

use ironroot_api::agent::agent_client::AgentClient;
use ironroot_runtime::report::Chain;
use ironroot_runtime::{unix_now, Backoff};
use tracing::{error, info, warn};

use crate::attest::{self, AttestError, KeySource};
use crate::cache::Cache;
use crate::config::AgentConfig;
use crate::data_dir::{DataDir, SavedSvid};
use crate::servers::Servers;
use crate::sync::{self, AgentSvid, SyncError};
use crate::workload_api::ServerClient;

/// Where the agent is.
#[derive(Debug)]
pub(crate) enum State {
    /// No usable agent SVID: attest (a fresh quote for TPM agents, the token otherwise).
    Attesting,
    /// Attestation failed: wait this long, then attest again.
    AttestBackoff(Duration),
    /// Serving the cache and keeping it in step with the server with this SVID,
    /// until its half life.
    Syncing(AgentSvid),
    /// The server was unreachable or refused a sync: serve the cache, wait, sync again.
    SyncBackoff(AgentSvid, Duration),
    /// A join_token agent at half life: renew the SVID over mTLS.
    Renewing(AgentSvid),
    /// The renewal failed: keep syncing with this SVID and renew again after the wait.
    RenewalBackoff(AgentSvid, Duration),
}

/// The agent: its config, the cache it fills, and what lasts across states.
pub(crate) struct Agent {
    cfg: AgentConfig,
    data_dir: DataDir,
    cache: Cache,
    /// The connection JWT-SVIDs are minted through, set at each (re)connect.
    server: ServerClient,
    /// The servers of the trust domain and the one in use: a failure moves to the next.
    servers: Servers,
    /// Made at the first attestation and kept for the agent's lifetime (the TPM
    /// key is loaded, or made, once and reused by every re-attestation).
    keys: Option<KeySource>,
    attest_backoff: Backoff,
    sync_backoff: Backoff,
    renewal_backoff: Backoff,
}

/// Where the end of a sync leads.
#[derive(Debug)]
enum AfterSync<'e> {
    /// Half life, join_token: renew over mTLS.
    Renew,
    /// Half life, TPM: attest again with a fresh quote.
    Attest,
    /// The server refused this SVID (evicted, banned, or no longer current):
    /// retrying with it cannot help, so a TPM agent attests again.
    AttestRefused(&'e SyncError),
    /// Unreachable or failed: serve the cache, back off, sync again. (A join_token
    /// agent whose SVID was refused ends here too: its token is spent.)
    Retry(&'e SyncError),
}

fn after_sync(result: &Result<(), SyncError>, renews_over_mtls: bool) -> AfterSync<'_> {
    match result {
        Ok(()) if renews_over_mtls => AfterSync::Renew,
        Ok(()) => AfterSync::Attest,
        Err(e) if e.agent_svid_refused() && !renews_over_mtls => AfterSync::AttestRefused(e),
        Err(e) => AfterSync::Retry(e),
    }
}

/// A delay as a log shows it.
fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Agent {
    pub(crate) fn new(cfg: AgentConfig, cache: Cache, server: ServerClient) -> Self {
        Agent {
            data_dir: DataDir::new(&cfg.data_dir),
            servers: Servers::from_config(&cfg),
            cfg,
            cache,
            server,
            keys: None,
            attest_backoff: Backoff::default(),
            sync_backoff: Backoff::default(),
            renewal_backoff: Backoff::default(),
        }
    }

    /// Steps from [`State::Attesting`] for ever (the caller stops it at shutdown).
    pub(crate) async fn run(&mut self) {
        let mut state = State::Attesting;
        loop {
            state = self.step(state).await;
        }
    }

    /// Does what `state` asks and returns the next state: the one place transitions
    /// are decided.
    pub(crate) async fn step(&mut self, state: State) -> State {
        match state {
            State::Attesting => match self.attest().await {
                Ok(svid) => {
                    self.attest_backoff.reset();
                    self.new_svid();
                    State::Syncing(svid)
                }
                Err(e) => {
                    let delay = self.attest_backoff.next_delay();
                    error!(
                        "attestation failed, retrying in {}: {}",
                        secs(delay),
                        Chain(&e)
                    );
                    State::AttestBackoff(delay)
                }
            },
            State::AttestBackoff(delay) => {
                tokio::time::sleep(delay).await;
                State::Attesting
            }
            // It expired during an outage: only a new attestation gives another.
            State::Syncing(svid) if unix_now() >= svid.expires_at => State::Attesting,
            State::Syncing(svid) => {
                let result = self.sync(&svid).await;
                match after_sync(&result, self.renews_over_mtls()) {
                    AfterSync::Renew => State::Renewing(svid),
                    AfterSync::Attest => State::Attesting,
                    AfterSync::AttestRefused(e) => {
                        warn!(
                            "the server refused the agent SVID, attesting again: {}",
                            Chain(e)
                        );
                        State::Attesting
                    }
                    AfterSync::Retry(e) => {
                        let delay = self.sync_backoff.next_delay();
                        warn!(
                            "sync failed (serving cached SVIDs), retrying in {}: {}",
                            secs(delay),
                            Chain(e)
                        );
                        State::SyncBackoff(svid, delay)
                    }
                }
            }
            State::SyncBackoff(svid, delay) => {
                tokio::time::sleep(delay).await;
                State::Syncing(svid)
            }
            State::Renewing(svid) => match self.renew(&svid).await {
                Ok(renewed) => {
                    self.save(&renewed);
                    self.new_svid();
                    State::Syncing(renewed)
                }
                Err(e) => {
                    // Attesting again would present the spent token: keep syncing
                    // with this SVID and retry the renewal until it expires.
                    let delay = self.renewal_backoff.next_delay();
                    warn!(
                        "agent SVID renewal failed, retrying in {}: {}",
                        secs(delay),
                        Chain(&e)
                    );
                    State::RenewalBackoff(svid, delay)
                }
            },
            State::RenewalBackoff(svid, delay) => {
                tokio::time::sleep(delay).await;
                State::Syncing(svid)
            }
        }
    }

    /// A join_token agent renews over mTLS; TPM agents attest again.
    fn renews_over_mtls(&self) -> bool {
        !self.cfg.node_attestor.uses_tpm()
    }

    /// A new agent SVID: outages and renewals of the last one start their backoff over.
    fn new_svid(&mut self) {
        self.sync_backoff.reset();
        self.renewal_backoff.reset();
    }

    async fn key_source(&mut self) -> Result<KeySource, AttestError> {
        if let Some(k) = &self.keys {
            return Ok(k.clone());
        }
        let c = self.cfg.clone();
        let made = tokio::task::spawn_blocking(move || KeySource::for_config(&c))
            .await
            .map_err(|_| AttestError::KeyWorker)??;
        self.keys = Some(made.clone());
        Ok(made)
    }

    async fn attest(&mut self) -> Result<AgentSvid, AttestError> {
        let keys = self.key_source().await?;
        let o =
            attest::attest_via(&self.servers, &self.cfg, &keys, attest::Hooks::default()).await?;
        info!(agent = %o.spiffe_id, policy = %o.boot_policy, expires_at = o.expires_at, "attested");
        if let Err(e) = o.save(&self.cfg) {
            warn!("cannot save the agent SVID: {}", Chain(&e));
        }
        Ok(AgentSvid::from(o))
    }

    /// Renews a join_token agent's SVID over mTLS, at the server in use or the next.
    async fn renew(&self, svid: &AgentSvid) -> Result<AgentSvid, SyncError> {
        sync::renew_agent_svid_via(&self.servers, &self.cfg, svid).await
    }

    fn save(&self, svid: &AgentSvid) {
        let saved = SavedSvid {
            chain: &svid.chain,
            roots: &svid.roots,
            key: &svid.key,
        };
        if let Err(e) = self.data_dir.save_svid(&saved) {
            warn!("cannot save the renewed agent SVID: {}", Chain(&e));
        }
    }

    /// Syncs with `svid` until its half life (`Ok`) or a failure; a failure after
    /// connecting moves on to the next server of the trust domain.
    async fn sync(&mut self, svid: &AgentSvid) -> Result<(), SyncError> {
        let (channel, server) = sync::agent_channel_via(&self.servers, &self.cfg, svid)
            .await
            .map_err(SyncError::Unreachable)?;
        // One channel serves the sync and the JWT-SVID requests.
        *self.server.write().await = Some(AgentClient::new(channel.clone()));
        let result = async {
            let session = sync::Session::start(channel, &self.cache).await?;
            // The server is back: a later outage starts the backoff over.
            self.sync_backoff.reset();
            info!(server = %server, "syncing with the server");
            session.follow(&self.cache, svid.renew_at()).await
        }
        .await;
        if result.is_err() {
            self.servers.failed(&server);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::ConnectError;

    fn refused(status: tonic::Status) -> Result<(), SyncError> {
        Err(SyncError::EntriesRefused(status.into()))
    }

    #[test]
    fn a_refused_svid_makes_a_tpm_agent_attest_and_a_join_token_agent_retry() {
        let denied = refused(tonic::Status::permission_denied("x is banned"));
        assert!(matches!(
            after_sync(&denied, false),
            AfterSync::AttestRefused(_)
        ));
        assert!(matches!(after_sync(&denied, true), AfterSync::Retry(_)));
    }

    #[test]
    fn outages_are_retried_and_half_life_renews_by_attestor() {
        let down = refused(tonic::Status::unavailable("restarting"));
        assert!(matches!(after_sync(&down, false), AfterSync::Retry(_)));
        let unreachable: Result<(), SyncError> = Err(SyncError::Unreachable(
            ConnectError::KeyUnusable(rustls::Error::General("no key".into())),
        ));
        assert!(matches!(
            after_sync(&unreachable, false),
            AfterSync::Retry(_)
        ));
        assert!(matches!(after_sync(&Ok(()), false), AfterSync::Attest));
        assert!(matches!(after_sync(&Ok(()), true), AfterSync::Renew));
    }
}
