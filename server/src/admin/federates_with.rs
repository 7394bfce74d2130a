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
//!
//! The same rule seen from the bundle's side: `bundle delete` refuses while
//! entries federate with the trust domain (rule `bundle-in-use`, SPIRE's
//! default `restrict` mode), or first deletes those entries (`delete`) or
//! removes the trust domain from them (`dissociate`). The entries are found in
//! the authorized-entry index once it holds every write acknowledged before
//! the call; one created during the delete is left naming a trust domain
//! without a bundle: the same race, which withholds a bundle and never gives
//! one.

use std::collections::HashSet;

use ironroot_api::admin as pb;
use ironroot_api::entry::EntrySpec;
use ironroot_api::spiffe_id::TrustDomain;
use tonic::Status;
use tracing::info;

use super::AdminService;
use crate::status;
use crate::store::{StoreError, MAX_BATCH};

/// How many entry ids a `bundle-in-use` refusal names.
const NAMED_IN_REFUSAL: usize = 3;
/// How long a `bundle delete` waits for the entry index to reach the store's head.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);
/// Tries to dissociate one entry that other writers keep changing.
const DISSOCIATE_TRIES: usize = 3;

/// What a `bundle delete` did to the entries that federated with the trust domain.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct EntriesSettled {
    /// Entries deleted (mode `delete`).
    pub(super) deleted: u32,
    /// Entries that no longer federate with it (mode `dissociate`).
    pub(super) dissociated: u32,
}

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

    /// Settles the entries that federate with `td` before its bundle is deleted, as `mode`
    /// says: refuses (`restrict`, FAILED_PRECONDITION naming rule `bundle-in-use` and some
    /// of them), deletes them, or removes `td` from their `federates_with`.
    /// Each entry deleted or changed is recorded in the audit log under `actor`, as an
    /// `entry.delete` or `entry.update` of its own, before the next is touched.
    pub(super) async fn settle_entries_federating_with(
        &self,
        actor: &str,
        td: &TrustDomain,
        mode: pb::BundleDeleteMode,
    ) -> Result<EntriesSettled, Status> {
        // Every write the store had acknowledged is in the index before it is asked: an
        // entry created just before this call is found. An index that cannot catch up is
        // not trusted to say "none".
        if !self.cache.catch_up(CATCH_UP).await {
            return Err(Status::unavailable(
                "the server's entry cache is behind the store, so the entries that federate \
                 with this trust domain cannot be listed; nothing was deleted: try again",
            ));
        }
        let federating = self.cache.read().federating_with(td);
        if federating.is_empty() {
            return Ok(EntriesSettled::default());
        }
        match mode {
            pb::BundleDeleteMode::Restrict => {
                let named: Vec<&str> = federating
                    .iter()
                    .take(NAMED_IN_REFUSAL)
                    .map(|e| e.id.as_str())
                    .collect();
                let more = federating.len().saturating_sub(NAMED_IN_REFUSAL);
                Err(Status::failed_precondition(format!(
                    "rule bundle-in-use: {} entr{} federate with {td} ({}{}): change them \
                     (`entry update --federates-with`), or delete the bundle with `--mode \
                     dissociate` (removes {td} from them) or `--mode delete` (deletes them)",
                    federating.len(),
                    if federating.len() == 1 { "y" } else { "ies" },
                    named.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    },
                )))
            }
            pb::BundleDeleteMode::Delete => {
                let mut settled = EntriesSettled::default();
                let ids: Vec<String> = federating.iter().map(|e| e.id.clone()).collect();
                for chunk in ids.chunks(MAX_BATCH) {
                    let results = self
                        .store
                        .delete_entries(chunk.to_vec())
                        .await
                        .map_err(status::store)?;
                    for r in results {
                        match r {
                            Ok(e) => {
                                settled.deleted += 1;
                                info!(entry = %e.id, trust_domain = %td, "entry deleted with the federated bundle it federated with");
                                self.audit
                                    .admin(
                                        actor,
                                        "entry.delete",
                                        format!("{} (bundle delete of {td}, mode delete)", e.id),
                                        Ok::<(), Status>(()),
                                    )
                                    .await?;
                            }
                            // Deleted by someone else meanwhile: nothing left to settle.
                            Err(StoreError::EntryNotFound { .. }) => {}
                            Err(e) => return Err(status::store(e)),
                        }
                    }
                }
                Ok(settled)
            }
            pb::BundleDeleteMode::Dissociate => {
                let mut settled = EntriesSettled::default();
                for e in &federating {
                    if self.dissociate(&e.id, td).await? {
                        settled.dissociated += 1;
                        self.audit
                            .admin(
                                actor,
                                "entry.update",
                                format!("{} (bundle delete of {td}, mode dissociate)", e.id),
                                Ok::<(), Status>(()),
                            )
                            .await?;
                    }
                }
                Ok(settled)
            }
        }
    }

    /// Removes `td` from entry `id`'s `federates_with`, from the stored entry and only at
    /// the revision read (another writer's change is read again, not overwritten); false
    /// when the entry is gone or no longer federates with it.
    async fn dissociate(&self, id: &str, td: &TrustDomain) -> Result<bool, Status> {
        for _ in 0..DISSOCIATE_TRIES {
            let Some(current) = self.store.get_entry(id).await.map_err(status::store)? else {
                return Ok(false);
            };
            if !current.spec.federates_with.contains(td) {
                return Ok(false);
            }
            let mut spec = current.spec.clone();
            spec.federates_with.retain(|d| d != td);
            match self
                .store
                .update_entry(id, spec, Some(current.revision))
                .await
            {
                Ok(_) => {
                    info!(entry = %id, trust_domain = %td, "entry no longer federates with the deleted bundle's trust domain");
                    return Ok(true);
                }
                Err(StoreError::RevisionMismatch { .. }) => continue,
                Err(StoreError::EntryNotFound { .. }) => return Ok(false),
                Err(e) => return Err(status::store(e)),
            }
        }
        Err(Status::aborted(format!(
            "entry {id} kept changing while {td} was being removed from its federates_with; \
             nothing else was changed for it: delete the bundle again"
        )))
    }
}
