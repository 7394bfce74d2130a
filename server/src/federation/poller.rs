//! One task per federation relationship: fetch the peer's bundle endpoint, judge the answer
//! ([`super::validate`]), store a changed bundle through the store's federated-bundle path
//! (the authorized-entry cache follows the store's feed and wakes every agent, so workloads
//! get it as they get a bundle set by hand), then wait for the refresh hint. A failure is
//! logged with its rule, retried with a jittered backoff, and never touches the stored
//! bundle: the last good one stays in force.
//!
//! https_spiffe endpoints are authenticated with the stored bundle of the trust domain,
//! read afresh before every fetch: the first one comes from the operator (`bundle set`,
//! SPIFFE Federation §5.2.1's bootstrap), each later one from the endpoint itself.

use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use ironroot_api::bundle::{TrustBundle, MAX_BUNDLE_JSON_LEN};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_api::tls::SpiffeServerVerifier;
use ironroot_runtime::backoff::Backoff;
use ironroot_runtime::https::{HttpsClient, HttpsError, TlsOptions};
use tokio::sync::watch;
use tonic::Status;
use tracing::{debug, info, warn};

use super::validate::{judge, next_refresh, BundleRefusal, Verdict};
use crate::audit::Audit;
use crate::config::{FederationConfig, PeerProfile, RefreshBounds, Relationship};
use crate::store::{DataStore, StoreError};

/// The longest wait between two attempts after failures.
const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);

/// Why one refresh stored nothing. Each names the rule or option to look at.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RefreshError {
    /// https_spiffe needs a bundle of the trust domain to authenticate the endpoint with.
    #[error(
        "rule bootstrap: no bundle of {0} is stored to authenticate its https_spiffe endpoint \
         with; set the first one by hand: `ironroot-server bundle set --id {0} --path <file>`"
    )]
    NotBootstrapped(TrustDomain),
    /// The stored bundle could not be read or written.
    #[error("the stored bundle of the trust domain cannot be read or written: {0}")]
    Store(#[source] StoreError),
    /// The stored bundle changed while this one was fetched and judged (an operator's
    /// `bundle set` or `bundle delete`, or another server's refresh): nothing was written;
    /// the next refresh judges against what is stored now.
    #[error(
        "the stored bundle of {0} changed during the fetch (an operator's bundle set or \
         delete, or another server's refresh); nothing written, the next refresh judges \
         against it"
    )]
    ChangedMeanwhile(TrustDomain),
    /// The TLS client could not be configured (`ca_file`).
    #[error("federation.federates_with.ca_file: {0}")]
    Client(#[source] HttpsError),
    /// The endpoint's certificate was refused.
    #[error("rule endpoint-authentication ({profile}): {source}")]
    Authentication {
        /// What the certificate was checked against.
        profile: String,
        /// The handshake failure, with the verifier's reason.
        #[source]
        source: HttpsError,
    },
    /// Network, timeout, HTTP or size.
    #[error("fetch failed: {0}")]
    Fetch(#[source] HttpsError),
    /// The endpoint answered something other than 200.
    #[error("the endpoint answered HTTP {0}, not 200")]
    Status(u16),
    /// The answer was not an acceptable bundle.
    #[error("bundle refused: {0}")]
    Refused(#[source] BundleRefusal),
}

impl RefreshError {
    /// What went wrong in one word (a metrics label): the rule, or the stage that failed.
    fn outcome(&self) -> &'static str {
        match self {
            RefreshError::NotBootstrapped(_) => "bootstrap",
            RefreshError::Store(_) => "store",
            RefreshError::ChangedMeanwhile(_) => "changed-meanwhile",
            RefreshError::Client(_) => "ca_file",
            RefreshError::Authentication { .. } => "endpoint-authentication",
            RefreshError::Fetch(_) => "fetch",
            RefreshError::Status(_) => "http-status",
            RefreshError::Refused(r) => r.rule(),
        }
    }
}

/// What the poller needs besides its relationship.
pub(crate) struct Poller {
    store: Arc<dyn DataStore>,
    audit: Audit,
    refresh: RefreshBounds,
    fetch_timeout: Duration,
}

impl Poller {
    fn tls_for(
        &self,
        rel: &Relationship,
        stored: Option<&TrustBundle>,
    ) -> Result<(Arc<rustls::ClientConfig>, String), RefreshError> {
        match &rel.profile {
            PeerProfile::HttpsSpiffe { endpoint_spiffe_id } => {
                let roots = stored
                    .map(|b| b.x509_authorities.clone())
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| RefreshError::NotBootstrapped(rel.trust_domain.clone()))?;
                let describe = format!(
                    "https_spiffe: the endpoint must present exactly {endpoint_spiffe_id} \
                     verifying to the stored bundle of {}",
                    rel.trust_domain
                );
                Ok((spiffe_client(roots, endpoint_spiffe_id.clone())?, describe))
            }
            PeerProfile::HttpsWeb { ca_file } => {
                let options = TlsOptions {
                    ca_file: Some(("federation.federates_with.ca_file", ca_file.clone())),
                    ..TlsOptions::default()
                };
                let config = options.client_config().map_err(RefreshError::Client)?;
                let describe = format!(
                    "https_web: the endpoint's certificate must verify to {} for the URL's host",
                    ca_file.display()
                );
                Ok((config, describe))
            }
        }
    }

    /// One fetch, judged and (when changed) stored; the refresh hint of the bundle fetched.
    pub(crate) async fn refresh_once(&self, rel: &Relationship) -> Result<u64, RefreshError> {
        let stored = self
            .store
            .get_federated_bundle(&rel.trust_domain)
            .await
            .map_err(RefreshError::Store)?;
        let (tls, describe) = self.tls_for(rel, stored.as_ref())?;
        let client = HttpsClient::new(&rel.url.base, tls, self.fetch_timeout, MAX_BUNDLE_JSON_LEN)
            .map_err(RefreshError::Fetch)?;
        let answer = client
            .request(Method::GET, &rel.url.path, None, None)
            .await
            .map_err(|e| {
                if e.is_tls() {
                    RefreshError::Authentication {
                        profile: describe,
                        source: e,
                    }
                } else {
                    RefreshError::Fetch(e)
                }
            })?;
        if answer.status != 200 {
            return Err(RefreshError::Status(answer.status));
        }
        let needs_x509 = matches!(rel.profile, PeerProfile::HttpsSpiffe { .. });
        let verdict = judge(&rel.trust_domain, &answer.body, stored.as_ref(), needs_x509)
            .map_err(RefreshError::Refused)?;
        let hint = verdict.bundle().refresh_hint_secs;
        match verdict {
            Verdict::Unchanged(b) => {
                crate::metrics::metrics().federation_refresh("unchanged");
                debug!(trust_domain = %rel.trust_domain, sequence = b.sequence_number, "federated bundle unchanged");
            }
            Verdict::Changed(b) => {
                // Judged against `stored`: written only if that is still what is stored.
                self.store
                    .replace_federated_bundle(stored.as_ref(), &b)
                    .await
                    .map_err(|e| match e {
                        StoreError::FederatedBundleChanged { .. } => {
                            RefreshError::ChangedMeanwhile(rel.trust_domain.clone())
                        }
                        e => RefreshError::Store(e),
                    })?;
                crate::metrics::metrics().federation_refresh("changed");
                info!(
                    trust_domain = %rel.trust_domain,
                    sequence = b.sequence_number,
                    previous_sequence = stored.as_ref().map(|s| s.sequence_number),
                    x509_authorities = b.x509_authorities.len(),
                    jwt_authorities = b.jwt_authorities.len(),
                    "federated bundle refreshed from its bundle endpoint"
                );
                // The store holds the bundle either way; a record that cannot be written is
                // logged by the audit log and reported by the health check.
                let _ = self
                    .audit
                    .admin(
                        "federation",
                        "federated_bundle_refreshed",
                        format!("{} sequence {}", rel.trust_domain, b.sequence_number),
                        Ok::<(), Status>(()),
                    )
                    .await;
            }
        }
        Ok(hint)
    }

    async fn run(self: Arc<Self>, rel: Relationship, mut bundle_changes: watch::Receiver<u64>) {
        let mut backoff = Backoff::new(self.refresh.min, self.refresh.max.min(MAX_FAILURE_BACKOFF));
        loop {
            let wait = match self.refresh_once(&rel).await {
                Ok(hint) => {
                    backoff.reset();
                    next_refresh(hint, &self.refresh)
                }
                Err(e) => {
                    crate::metrics::metrics().federation_refresh(e.outcome());
                    let wait = backoff.next_delay();
                    warn!(
                        trust_domain = %rel.trust_domain,
                        url = %rel.url,
                        error = %e,
                        retry_in = ?wait,
                        "federated bundle not refreshed; the last good bundle stays in force"
                    );
                    wait
                }
            };
            self.wait_or_changed(&rel, wait, &mut bundle_changes).await;
        }
    }

    /// Sleeps `wait`, or less when the stored bundle of `rel`'s trust domain becomes other
    /// than it is now (this poller's own writes are already in it, so they do not count).
    async fn wait_or_changed(
        &self,
        rel: &Relationship,
        wait: Duration,
        changes: &mut watch::Receiver<u64>,
    ) {
        let deadline = tokio::time::Instant::now() + wait;
        let seen = self
            .store
            .get_federated_bundle(&rel.trust_domain)
            .await
            .ok();
        changes.borrow_and_update();
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                r = changes.changed() => {
                    if r.is_err() {
                        tokio::time::sleep_until(deadline).await;
                        return;
                    }
                    let now = self.store.get_federated_bundle(&rel.trust_domain).await.ok();
                    if now.is_some() && now != seen {
                        info!(
                            trust_domain = %rel.trust_domain,
                            "the stored bundle was changed (bundle set or delete, or another \
                             server's refresh): fetching now instead of at the next refresh"
                        );
                        return;
                    }
                }
            }
        }
    }
}

/// A TLS client that accepts only an X.509-SVID naming `expected` and verifying to `roots`.
fn spiffe_client(
    roots: Vec<Vec<u8>>,
    expected: SpiffeId,
) -> Result<Arc<rustls::ClientConfig>, RefreshError> {
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| {
        RefreshError::Client(HttpsError::Http {
            authority: String::new(),
            reason: e.to_string(),
        })
    })?
    .dangerous()
    .with_custom_certificate_verifier(SpiffeServerVerifier::new(roots, expected))
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Starts one poller per relationship.
/// Polls every relationship of `cfg`; `bundle_changes` (the authorized-entry cache's notice
/// of stored federated bundles) cuts a relationship's wait short when its stored bundle is
/// changed by someone else: an operator's bootstrap `bundle set` is taken up at once, not
/// at the next retry up to five minutes later.
pub(crate) fn spawn(
    cfg: &FederationConfig,
    store: Arc<dyn DataStore>,
    audit: Audit,
    bundle_changes: watch::Receiver<u64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let poller = Arc::new(Poller {
        store,
        audit,
        refresh: cfg.refresh,
        fetch_timeout: cfg.fetch_timeout,
    });
    cfg.relationships
        .iter()
        .map(|rel| {
            info!(
                trust_domain = %rel.trust_domain,
                url = %rel.url,
                profile = match rel.profile {
                    PeerProfile::HttpsSpiffe { .. } => "https_spiffe",
                    PeerProfile::HttpsWeb { .. } => "https_web",
                },
                "federation relationship: polling the bundle endpoint"
            );
            tokio::spawn(poller.clone().run(rel.clone(), bundle_changes.clone()))
        })
        .collect()
}
