//! Keeps the cache in step with the server over mTLS (the agent SVID as
//! client certificate): the entries this agent may serve, an X.509-SVID per
//! entry (renewed at half life or when the entry changes, CSRs in batches of
//! [`CSRS_PER_CALL`]), and the bundles. A WatchChanges stream makes a change
//! reach the cache at once; a periodic sync covers a lost or refused stream.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use ironroot_api::agent::{self as pb, agent_client::AgentClient};
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_runtime::unix_now;
use tonic::transport::Channel;
use tracing::{debug, info, warn};

use crate::agent_key::{AgentKey, AgentKeyError};
use crate::attest::AttestOutcome;
use crate::cache::{self, Cache, CachedSvid, Rejected, Snapshot};
use crate::config::AgentConfig;
use crate::connect::{self, ClientIdentity, ConnectError};
use crate::refused::{RefusalKind, Refused};
use crate::servers::{Server, Servers};

/// Sync at least this often, even without change notices.
pub const SYNC_INTERVAL: Duration = Duration::from_secs(5);

/// Most CSRs in one BatchNewX509Svid call; servers accept at least this many.
pub use ironroot_api::AGENT_CSRS_PER_CALL as CSRS_PER_CALL;

/// Why syncing with the server stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// No TLS channel to the server with the agent SVID.
    #[error("server unreachable")]
    Unreachable(#[source] ConnectError),
    /// The server refused to send the entries this agent may serve.
    #[error("entry sync refused: {0}")]
    EntriesRefused(Refused),
    /// The server refused to sign the workload SVIDs' CSRs.
    #[error("SVID signing refused: {0}")]
    SigningRefused(Refused),
    /// The server refused to open the change stream.
    #[error("change watch refused: {0}")]
    WatchRefused(Refused),
    /// The change stream ended with an error status.
    #[error("change stream failed: {0}")]
    StreamFailed(Refused),
    /// The server closed the change stream without a status (it may be restarting).
    #[error("the server closed the change stream")]
    StreamClosed,
    /// The server refused to renew the agent SVID.
    #[error("agent SVID renewal refused: {0}")]
    RenewalRefused(Refused),
    /// A workload SVID's key or CSR could not be made.
    #[error("cannot make a key and CSR for an SVID")]
    SvidKey(#[source] rcgen::Error),
    /// A software key and CSR for the renewed agent SVID could not be made.
    #[error(transparent)]
    AgentKey(#[from] AgentKeyError),
}

impl SyncError {
    /// The server refused to serve this agent SVID (evicted, banned, or an SVID
    /// that is no longer its current one): syncing with it again cannot help.
    pub fn agent_svid_refused(&self) -> bool {
        match self {
            SyncError::EntriesRefused(r)
            | SyncError::SigningRefused(r)
            | SyncError::WatchRefused(r)
            | SyncError::StreamFailed(r)
            | SyncError::RenewalRefused(r) => r.kind() == RefusalKind::Denied,
            _ => false,
        }
    }
}

/// The agent's current SVID.
#[derive(Clone)]
pub struct AgentSvid {
    /// The agent's SPIFFE ID.
    pub spiffe_id: String,
    /// The SVID (DER), leaf first, then any intermediates.
    pub chain: Vec<Vec<u8>>,
    /// In the TPM, or in memory.
    pub key: AgentKey,
    /// When the agent got it, in Unix seconds: half-way to `expires_at` it is renewed.
    pub issued_at: i64,
    /// When it expires, in Unix seconds.
    pub expires_at: i64,
    /// The trust domain's roots (DER) the server's SVID is verified with.
    pub roots: Vec<Vec<u8>>,
}

impl AgentSvid {
    /// Half its life: TPM agents attest again, join_token agents renew.
    pub fn renew_at(&self) -> i64 {
        self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

impl From<AttestOutcome> for AgentSvid {
    fn from(o: AttestOutcome) -> Self {
        AgentSvid {
            spiffe_id: o.spiffe_id,
            chain: o.svid_chain,
            key: o.key,
            issued_at: unix_now(),
            expires_at: o.expires_at,
            roots: o.root_cas,
        }
    }
}

impl std::fmt::Debug for AgentSvid {
    /// Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentSvid")
            .field("spiffe_id", &self.spiffe_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// An mTLS channel with the agent SVID to the first server of `cfg` that answers.
pub async fn agent_channel(cfg: &AgentConfig, svid: &AgentSvid) -> Result<Channel, ConnectError> {
    let (channel, _) = agent_channel_via(&Servers::from_config(cfg), cfg, svid).await?;
    Ok(channel)
}

/// An mTLS channel with the agent SVID to the first of `servers` that answers, from the
/// current one on; with the server it reached. The agent SVID is good at every server of
/// the trust domain: they share one CA.
pub async fn agent_channel_via(
    servers: &Servers,
    cfg: &AgentConfig,
    svid: &AgentSvid,
) -> Result<(Channel, Server), ConnectError> {
    let mut roots = connect::read_bundle(&cfg.trust_bundle_path)?;
    for r in &svid.roots {
        if !roots.contains(r) {
            roots.push(r.clone());
        }
    }
    let server_id = SpiffeId::server(&cfg.trust_domain);
    servers
        .connect(|server| {
            let (roots, server_id) = (roots.clone(), server_id.clone());
            let identity = ClientIdentity {
                chain: svid.chain.clone(),
                key: svid.key.clone(),
            };
            async move {
                connect::channel_with_identity(&server, roots, server_id, Some(identity)).await
            }
        })
        .await
}

/// What the last answer from the server held, so that the next sync asks
/// only for what changed since (`known_revision`). Starts empty: the first
/// sync of a session is a full one.
#[derive(Debug, Default)]
pub struct SyncState {
    revision: u64,
    entries: HashMap<String, pb::Entry>,
}

impl SyncState {
    /// The entries as of the last answer, merged with a delta; `None` when
    /// the delta names an entry this state does not have.
    fn merge(&self, changed: Vec<pb::Entry>, ids: &[String]) -> Option<Vec<pb::Entry>> {
        let mut changed: HashMap<String, pb::Entry> =
            changed.into_iter().map(|e| (e.id.clone(), e)).collect();
        ids.iter()
            .map(|id| changed.remove(id).or_else(|| self.entries.get(id).cloned()))
            .collect()
    }
}

/// Asks for the entries (a delta after the first answer) and returns the
/// answer with `entries` complete.
async fn fetch_entries(
    client: &mut AgentClient<Channel>,
    state: &mut SyncState,
) -> Result<pb::SyncEntriesResponse, SyncError> {
    loop {
        let mut resp = client
            .sync_entries(pb::SyncEntriesRequest {
                known_revision: state.revision,
            })
            .await
            .map_err(|s| SyncError::EntriesRefused(s.into()))?
            .into_inner();
        if resp.delta {
            match state.merge(std::mem::take(&mut resp.entries), &resp.entry_ids) {
                Some(all) => resp.entries = all,
                None if state.revision != 0 => {
                    // An entry newly ours that did not change (a node alias now
                    // matches): the server cannot know we lack it. Ask for all.
                    debug!("delta names an entry this agent does not have: full sync");
                    state.revision = 0;
                    continue;
                }
                None => return Err(SyncError::EntriesRefused(
                    tonic::Status::internal(
                        "the server answered a full sync with a delta that names unknown entries",
                    )
                    .into(),
                )),
            }
        }
        state.revision = resp.revision;
        state.entries = resp
            .entries
            .iter()
            .map(|e| (e.id.clone(), e.clone()))
            .collect();
        return Ok(resp);
    }
}

/// One full sync: entries, bundle, and new SVIDs where needed.
pub async fn sync_once(
    client: &mut AgentClient<Channel>,
    cache: &Cache,
) -> Result<bool, SyncError> {
    sync_from(client, cache, &mut SyncState::default()).await
}

/// One sync from `state` (a delta when it holds an earlier answer).
pub async fn sync_from(
    client: &mut AgentClient<Channel>,
    cache: &Cache,
    state: &mut SyncState,
) -> Result<bool, SyncError> {
    let started = std::time::Instant::now();
    let round = sync_round(client, cache, state).await;
    crate::metrics::metrics().server_sync(round.is_ok(), started.elapsed());
    round
}

/// [`sync_from`]'s work, timed by it.
async fn sync_round(
    client: &mut AgentClient<Channel>,
    cache: &Cache,
    state: &mut SyncState,
) -> Result<bool, SyncError> {
    let resp = fetch_entries(client, state).await?;
    let current = cache.snapshot();
    let parsed = cache::parse(
        &current.trust_domain,
        resp.entries,
        &resp.jwks_json,
        resp.federated_jwks.into_iter().collect(),
    );
    let rejected = report_rejected(&current, parsed.rejected);
    let entries = parsed.entries;
    let now = unix_now();
    let mut svids: HashMap<String, CachedSvid> = HashMap::new();
    let mut requests = Vec::new();
    let mut keys = HashMap::new();
    for e in &entries {
        match current.svids.get(&e.id) {
            Some(s) if !s.needs_renewal(now, e.revision_number) => {
                svids.insert(e.id.clone(), s.clone());
            }
            _ => {
                let key = rcgen::KeyPair::generate().map_err(SyncError::SvidKey)?;
                let csr = rcgen::CertificateParams::default()
                    .serialize_request(&key)
                    .map_err(SyncError::SvidKey)?
                    .der()
                    .to_vec();
                requests.push(pb::X509SvidRequest {
                    entry_id: e.id.clone(),
                    csr,
                });
                keys.insert(e.id.clone(), key.serialize_der());
            }
        }
    }
    if !requests.is_empty() {
        for r in sign(client, requests).await? {
            if !r.error.is_empty() {
                warn!(entry = %r.entry_id, error = %r.error, "server did not sign an SVID");
                continue;
            }
            let (Some(e), Some(key)) = (
                entries.iter().find(|e| e.id == r.entry_id),
                keys.remove(&r.entry_id),
            ) else {
                continue;
            };
            debug!(entry = %e.id, spiffe_id = %e.spiffe_id, "SVID signed");
            svids.insert(
                e.id.clone(),
                CachedSvid {
                    entry_id: e.id.clone(),
                    spiffe_id: e.spiffe_id.clone(),
                    chain: r.svid_chain,
                    key_pkcs8: key,
                    issued_at: now,
                    expires_at: r.expires_at,
                    entry_revision: e.revision_number,
                },
            );
        }
    }
    // An SVID the server did not renew this time (it reported an error for
    // it) is kept while still valid for the same entry revision: a failed
    // renewal must not take an identity away before it expires.
    for e in &entries {
        if let Some(s) = current.svids.get(&e.id) {
            if !svids.contains_key(&e.id)
                && s.entry_revision == e.revision_number
                && s.expires_at > now
            {
                svids.insert(e.id.clone(), s.clone());
            }
        }
    }
    let next = Snapshot {
        trust_domain: current.trust_domain.clone(),
        entries,
        svids,
        roots: resp.x509_authorities,
        jwt_bundle: parsed.jwt_bundle,
        federated: parsed.federated,
        rejected,
    };
    Ok(cache.publish(next))
}

/// Asks for SVIDs [`CSRS_PER_CALL`] at a time. A call refused as over one of the server's
/// limits ends the round with what was signed so far: the rest are asked for at the next
/// sync, instead of the whole round failing, losing what was signed, and asking for it all
/// again (which, behind a busy address, would never end). Any other refusal fails the sync.
async fn sign(
    client: &mut AgentClient<Channel>,
    requests: Vec<pb::X509SvidRequest>,
) -> Result<Vec<pb::X509SvidResult>, SyncError> {
    let total = requests.len();
    let mut results = Vec::with_capacity(total);
    let mut requests = requests.into_iter().peekable();
    while requests.peek().is_some() {
        let chunk: Vec<_> = requests.by_ref().take(CSRS_PER_CALL).collect();
        match client
            .batch_new_x509_svid(pb::BatchNewX509SvidRequest { requests: chunk })
            .await
        {
            Ok(r) => results.extend(r.into_inner().results),
            Err(s) => {
                let refused = Refused::from(s);
                if refused.kind() != RefusalKind::Exhausted {
                    return Err(SyncError::SigningRefused(refused));
                }
                warn!(
                    signed = results.len(),
                    left = total - results.len(),
                    "SVID signing paused until the next sync: {refused}"
                );
                break;
            }
        }
    }
    Ok(results)
}

/// Logs what the server sent but cannot be served, once when it first appears (a
/// sync runs every few seconds), and keys it for the snapshot.
fn report_rejected(current: &Snapshot, rejected: Vec<Rejected>) -> BTreeMap<String, String> {
    let now: BTreeMap<String, String> = rejected
        .iter()
        .map(|r| (r.subject(), r.to_string()))
        .collect();
    for (subject, why) in &now {
        if current.rejected.get(subject) != Some(why) {
            warn!(%subject, rejected = now.len(), "not served: {why}");
        }
    }
    now
}

/// A connection to the server whose first sync went through.
pub(crate) struct Session {
    client: AgentClient<Channel>,
    state: SyncState,
}

impl Session {
    /// Syncs once over `channel`: the server is back once this returns.
    pub(crate) async fn start(channel: Channel, cache: &Cache) -> Result<Session, SyncError> {
        let mut client = AgentClient::new(channel);
        let mut state = SyncState::default();
        sync_from(&mut client, cache, &mut state).await?;
        Ok(Session { client, state })
    }

    /// Keeps the cache in step (on change notices, and every [`SYNC_INTERVAL`])
    /// until `renew_at` (returns `Ok`: the agent SVID is at half life) or the
    /// connection fails.
    pub(crate) async fn follow(mut self, cache: &Cache, renew_at: i64) -> Result<(), SyncError> {
        let mut notices = self.watch().await?;
        let mut tick = tokio::time::interval(SYNC_INTERVAL);
        loop {
            let until_renewal = Duration::from_secs((renew_at - unix_now()).max(0) as u64);
            let notice = async {
                match notices.as_mut() {
                    Some(n) => n.message().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(until_renewal) => {
                    info!("agent SVID at half life: re-attesting");
                    return Ok(());
                }
                n = notice => {
                    match n {
                        Ok(Some(_)) => {}
                        Ok(None) => return Err(SyncError::StreamClosed),
                        Err(s) => return Err(SyncError::StreamFailed(s.into())),
                    }
                }
                _ = tick.tick() => {}
            }
            // Without a stream only the tick gets here: ask for one again.
            if notices.is_none() {
                notices = self.watch().await?;
            }
            if sync_from(&mut self.client, cache, &mut self.state).await? {
                debug!("cache updated");
            }
        }
    }
}

impl Session {
    /// Opens the change stream; `None` when the server holds as many as it may (the
    /// session then polls every [`SYNC_INTERVAL`] and asks again).
    async fn watch(&mut self) -> Result<Option<tonic::Streaming<pb::ChangeNotice>>, SyncError> {
        match self.client.watch_changes(pb::WatchChangesRequest {}).await {
            Ok(s) => Ok(Some(s.into_inner())),
            Err(s) => {
                let refused = Refused::from(s);
                if refused.kind() != RefusalKind::Exhausted {
                    return Err(SyncError::WatchRefused(refused));
                }
                warn!("no change stream, polling every {SYNC_INTERVAL:?}: {refused}");
                Ok(None)
            }
        }
    }
}

/// Renews a join_token agent's SVID over mTLS (its single-use token cannot be
/// presented again). TPM agents never use this: they re-attest.
pub async fn renew_agent_svid(cfg: &AgentConfig, svid: &AgentSvid) -> Result<AgentSvid, SyncError> {
    renew_agent_svid_via(&Servers::from_config(cfg), cfg, svid).await
}

/// [`renew_agent_svid`] at the first of `servers` that answers; a refused or failed
/// renewal moves `servers` on to the next one.
pub async fn renew_agent_svid_via(
    servers: &Servers,
    cfg: &AgentConfig,
    svid: &AgentSvid,
) -> Result<AgentSvid, SyncError> {
    let (channel, server) = agent_channel_via(servers, cfg, svid)
        .await
        .map_err(SyncError::Unreachable)?;
    let mut client = AgentClient::new(channel);
    // join_token agents keep a software key: no TPM evidence could certify another.
    let (key, csr) = AgentKey::software()?;
    let r = client
        .renew_agent_svid(pb::RenewAgentSvidRequest { csr })
        .await
        .map_err(|s| {
            servers.failed(&server);
            SyncError::RenewalRefused(s.into())
        })?
        .into_inner();
    Ok(AgentSvid {
        spiffe_id: svid.spiffe_id.clone(),
        chain: r.svid_chain,
        key,
        issued_at: unix_now(),
        expires_at: r.expires_at,
        roots: r.root_cas,
    })
}
