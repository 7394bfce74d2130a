//! The admin API's half of an entry's `federates_with`: the rule that needs the
//! store. An entry may federate only with a trust domain whose federated bundle
//! the server holds (rule `federates-with-needs-bundle`, as SPIRE refuses
//! such an entry): otherwise its workloads are promised a bundle nobody can
//! give them, and a typo in a trust domain would pass silently. The rules
//! that need no store (spelling, limit, not the own trust domain) are
//! [`EntrySpec::validate`]'s.
//!
//! Checked here, before the store writes, not inside the store's write: a
//! bundle deleted between this check and the write leaves an entry naming a
//! trust domain without a bundle, which serves nothing from it (agents filter
//! on bundles they have), so the race can only withhold a bundle, never give
//! one.

use std::collections::HashSet;

use ironroot_api::entry::EntrySpec;
use ironroot_api::spiffe_id::TrustDomain;
use tonic::Status;

use super::AdminService;
use crate::status;

impl AdminService {
    /// The trust domains whose federated bundles are stored.
    pub(super) async fn stored_bundle_domains(&self) -> Result<HashSet<TrustDomain>, Status> {
        Ok(self
            .store
            .list_federated_bundles()
            .await
            .map_err(status::store)?
            .into_iter()
            .map(|b| b.trust_domain)
            .collect())
    }

    /// Refuses `spec` if it federates with a trust domain not in `stored`
    /// (FAILED_PRECONDITION naming the rule and how to store the bundle).
    pub(super) fn check_federates_with(
        &self,
        spec: &EntrySpec,
        stored: &HashSet<TrustDomain>,
    ) -> Result<(), Status> {
        if spec.federates_with.is_empty() {
            return Ok(());
        }
        // The store-free rules first, so an entry naming its own trust domain
        // is told that, not that no bundle of it is stored.
        spec.validate(self.ca.trust_domain())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        spec.check_federated_bundles(|td| stored.contains(td))
            .map_err(|e| Status::failed_precondition(e.to_string()))
    }

    /// [`Self::check_federates_with`] for one entry, reading the stored
    /// bundles only when it federates with any.
    pub(super) async fn require_federated_bundles(&self, spec: &EntrySpec) -> Result<(), Status> {
        if spec.federates_with.is_empty() {
            return Ok(());
        }
        let stored = self.stored_bundle_domains().await?;
        self.check_federates_with(spec, &stored)
    }
}
