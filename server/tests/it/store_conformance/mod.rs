//! The DataStore conformance suite: one set of cases every backend passes
//! (`conformance_suite!(Backend)` in a backend's test file makes each case a
//! test). A backend supplies a fresh store, a way to reopen the same
//! storage, and a way to plant a record that does not decode.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironroot_api::bundle::{JwtAuthority, TrustBundle};
use ironroot_api::entry::{EntryError, EntrySpec, RegistrationEntry};
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_server::store::{
    AttestedNode, Change, ChangesSince, DataStore, EntryFilter, FederatesWithFilter,
    FederatesWithMatch, PageRequest, Revision, StoreError,
};

/// What a backend gives the suite.
pub(crate) trait Backend: Sized + Send {
    /// A fresh, empty store for trust domain `example.org`.
    async fn fresh() -> (Self, Arc<dyn DataStore>);
    /// The same storage opened again for `td` (the previous handle dropped
    /// first by the caller).
    async fn reopen(&self, td: TrustDomain) -> Result<Arc<dyn DataStore>, StoreError>;
    /// Replaces the stored entry `id` with bytes that do not decode (the
    /// previous handle dropped first by the caller).
    async fn corrupt_entry(&self, id: &str);
}

pub(crate) fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org{s}")).unwrap()
}

pub(crate) fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

pub(crate) fn spec(path: &str, selectors: &[&str]) -> EntrySpec {
    EntrySpec {
        spiffe_id: id(path),
        parent_id: id("/spire/agent/tpm/node1"),
        selectors: selectors.iter().map(|s| sel(s)).collect(),
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: 0,
        federates_with: vec![],
    }
}

pub(crate) fn node(path: &str) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(path),
        attestor: "tpm".into(),
        selectors: vec![sel("tpm:ek_hash:abcd"), sel("tpm:secure_boot:enabled")],
        serial_number: "0a1b".into(),
        expires_at: 1_900_000_000,
        banned: false,
        first_attested_at: 1_700_000_000,
        last_attested_at: 1_700_000_100,
    }
}

pub(crate) fn bundle(name: &str, seq: u64) -> TrustBundle {
    TrustBundle {
        trust_domain: TrustDomain::parse(name).unwrap(),
        // The store treats these as opaque bytes.
        x509_authorities: vec![vec![0x30, 0x03, 1, 2, 3]],
        jwt_authorities: vec![JwtAuthority {
            key_id: "k1".into(),
            public_key_der: vec![0x30, 0x00],
            expires_at: 5,
        }],
        sequence_number: seq,
        refresh_hint_secs: 300,
    }
}

/// Every entry passing `filter`, through every page of `size`.
pub(crate) async fn list_all(
    store: &dyn DataStore,
    filter: &EntryFilter,
    size: usize,
) -> Vec<RegistrationEntry> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(size);
    loop {
        let p = store.list_entries(filter, &page).await.unwrap();
        out.extend(p.items);
        match p.next {
            Some(next) => page.after = Some(next),
            None => return out,
        }
    }
}

pub(crate) async fn all(store: &dyn DataStore) -> Vec<RegistrationEntry> {
    list_all(store, &EntryFilter::default(), 0).await
}

/// Every change event after `after`.
pub(crate) async fn events_after(
    store: &dyn DataStore,
    after: u64,
) -> Vec<ironroot_server::store::ChangeEvent> {
    match store.changes_since(Revision(after), 10_000).await.unwrap() {
        ChangesSince::Events(e) => e,
        other => panic!("expected events after {after}, got {other:?}"),
    }
}

mod durability;
mod entries;
mod federates_with;
mod feed;
mod records;

pub(crate) use durability::*;
pub(crate) use entries::*;
pub(crate) use federates_with::*;
pub(crate) use feed::*;
pub(crate) use records::*;

/// Makes each case a `#[tokio::test]` for backend `$b`.
#[macro_export]
macro_rules! conformance_suite {
    ($b:ty) => {
        $crate::conformance_suite!(@plain $b,
            entry_crud_and_filters,
            duplicates_are_rejected_and_change_nothing,
            invalid_entries_are_rejected_and_change_nothing,
            revision_mismatch,
            nodes_bans_bundles_journal_and_tokens,
            the_ca_journal_is_replaced_only_from_what_was_read,
            a_federated_bundle_is_replaced_only_over_what_was_judged,
            batches_give_a_result_per_item,
            pages_neither_repeat_nor_skip,
            the_change_feed_reproduces_the_store,
            concurrent_writers_make_no_duplicates_and_no_gaps,
            federates_with_round_trips_and_updates,
            entries_are_listed_by_federates_with
        );
        $crate::conformance_suite!(@with_backend $b,
            data_survives_reopen,
            an_unreadable_record_is_skipped_and_reported
        );
    };
    (@plain $b:ty, $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_backend, store) = <$b as $crate::store_conformance::Backend>::fresh().await;
                $crate::store_conformance::$case(store).await;
            }
        )+
    };
    (@with_backend $b:ty, $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (backend, store) = <$b as $crate::store_conformance::Backend>::fresh().await;
                $crate::store_conformance::$case(backend, store).await;
            }
        )+
    };
}
