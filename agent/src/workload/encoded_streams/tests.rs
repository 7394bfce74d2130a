//! Which federated bundles each stream's answer carries: only those named in
//! `federates_with` by an entry the caller was attested to
//! ([`Snapshot::federated_bundles_for`]), through the shared-response memo the
//! streams use, across snapshots as the sync publishes them.

use std::collections::HashMap;

use ironroot_api::agent as agent_pb;
use ironroot_api::bundle::TrustBundle;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_api::workload as pb;
use prost::Message;

use super::*;
use crate::cache::{parse, CachedSvid};

const PARTNER: &str = "spiffe://partner.org";
const THIRD: &str = "spiffe://third.org";
const OWN: &str = "spiffe://example.org";

fn sync_entry(id: &str, uid: u32, federates_with: &[&str]) -> agent_pb::Entry {
    agent_pb::Entry {
        id: id.into(),
        spiffe_id: format!("spiffe://example.org/{id}"),
        selectors: vec![agent_pb::Selector {
            r#type: "unix".into(),
            value: format!("uid:{uid}"),
        }],
        federates_with: federates_with.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn bundle(td: &str) -> TrustBundle {
    let mut b = TrustBundle::new(TrustDomain::parse(td).unwrap());
    b.x509_authorities
        .push(format!("root of {td}").into_bytes());
    b
}

/// A snapshot as a sync stores it: `entries` parsed from the wire, SVIDs for
/// each, and the federated bundles of partner.org and third.org (the server
/// sends every one it holds).
fn snapshot(entries: Vec<agent_pb::Entry>) -> Arc<Snapshot> {
    let parsed = parse("example.org", entries, "", HashMap::new());
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let svids = parsed
        .entries
        .iter()
        .map(|e| {
            let svid = CachedSvid {
                entry_id: e.id.clone(),
                spiffe_id: e.spiffe_id.clone(),
                chain: vec![b"leaf".to_vec()],
                key_pkcs8: b"key".to_vec(),
                issued_at: 0,
                expires_at: i64::MAX,
                entry_revision: e.revision_number,
            };
            (e.id.clone(), svid)
        })
        .collect();
    Arc::new(Snapshot {
        trust_domain: "example.org".into(),
        entries: parsed.entries,
        svids,
        roots: vec![b"own root".to_vec()],
        jwt_bundle: Some(TrustBundle::new(TrustDomain::parse("example.org").unwrap())),
        federated: ["partner.org", "third.org"]
            .into_iter()
            .map(|td| (td.to_string(), bundle(td)))
            .collect(),
        rejected: Default::default(),
    })
}

fn caller(uid: u32) -> Vec<Selector> {
    vec![Selector::new("unix", format!("uid:{uid}")).unwrap()]
}

fn decode<M: Message + Default>(m: &EncodedMessage) -> M {
    M::decode(&m.frame()[5..]).unwrap()
}

/// The trust domain IDs each of the three streams would send `uid` from `snap`
/// (FetchX509SVID's `federated_bundles`; the bundles streams' maps, own included).
fn seen(shared: &SharedResponses, snap: &Arc<Snapshot>, uid: u32) -> [Vec<String>; 3] {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let svid: Vec<String> = match x509_svids(shared, snap, &caller(uid)) {
        Ok(m) => decode::<pb::X509svidResponse>(&m)
            .federated_bundles
            .into_keys()
            .collect(),
        Err(s) => vec![format!("refused: {}", s.message())],
    };
    let x509 = bundles(shared, snap, StreamKind::X509Bundles, &caller(uid)).unwrap();
    let jwt = bundles(shared, snap, StreamKind::JwtBundles, &caller(uid)).unwrap();
    [
        sorted(svid),
        sorted(
            decode::<pb::X509BundlesResponse>(&x509)
                .bundles
                .into_keys()
                .collect(),
        ),
        sorted(
            decode::<pb::JwtBundlesResponse>(&jwt)
                .bundles
                .into_keys()
                .collect(),
        ),
    ]
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn of_two_workloads_only_the_federating_one_gets_the_bundle() {
    let shared = SharedResponses::new();
    let snap = snapshot(vec![
        sync_entry("fed", 1000, &["partner.org"]),
        sync_entry("plain", 2000, &[]),
    ]);
    assert_eq!(
        seen(&shared, &snap, 1000),
        [
            strings(&[PARTNER]),
            strings(&[OWN, PARTNER]),
            strings(&[OWN, PARTNER])
        ],
        "third.org is stored but named by no entry"
    );
    // Same snapshot, same memo, the first caller's answers still held (as its
    // open streams hold them): the other caller is not handed the same bytes.
    let held = [StreamKind::X509Bundles, StreamKind::JwtBundles]
        .map(|kind| bundles(&shared, &snap, kind, &caller(1000)).unwrap());
    assert_eq!(
        seen(&shared, &snap, 2000),
        [vec![], strings(&[OWN]), strings(&[OWN])]
    );
    drop(held);
}

#[test]
fn a_caller_gets_the_union_of_its_entries_federates_with() {
    let shared = SharedResponses::new();
    let snap = snapshot(vec![
        sync_entry("a", 1000, &["partner.org"]),
        sync_entry("b", 1000, &["third.org", "partner.org"]),
        // Names a trust domain the agent holds no bundle of: nothing to give.
        sync_entry("c", 1000, &["absent.org"]),
    ]);
    assert_eq!(
        seen(&shared, &snap, 1000),
        [
            strings(&[PARTNER, THIRD]),
            strings(&[OWN, PARTNER, THIRD]),
            strings(&[OWN, PARTNER, THIRD])
        ]
    );
}

#[test]
fn an_entry_updated_to_drop_the_domain_withdraws_the_bundle_at_the_next_response() {
    let shared = SharedResponses::new();
    let before = snapshot(vec![sync_entry("fed", 1000, &["partner.org", "third.org"])]);
    assert_eq!(seen(&shared, &before, 1000)[0], strings(&[PARTNER, THIRD]));
    let mut updated = sync_entry("fed", 1000, &["third.org"]);
    updated.revision_number = 1;
    let after = snapshot(vec![updated]);
    assert_eq!(
        seen(&shared, &after, 1000),
        [
            strings(&[THIRD]),
            strings(&[OWN, THIRD]),
            strings(&[OWN, THIRD])
        ]
    );
    let mut emptied = sync_entry("fed", 1000, &[]);
    emptied.revision_number = 2;
    let last = snapshot(vec![emptied]);
    assert_eq!(
        seen(&shared, &last, 1000),
        [vec![], strings(&[OWN]), strings(&[OWN])]
    );
}

#[test]
fn a_caller_matching_no_entry_gets_no_federated_bundle() {
    let shared = SharedResponses::new();
    let snap = snapshot(vec![sync_entry("fed", 1000, &["partner.org"])]);
    // The streams refuse it at open (no identity); the answers themselves
    // carry nothing federated either.
    let [svid, x509, jwt] = seen(&shared, &snap, 4242);
    assert_eq!(svid, strings(&["refused: no identity issued"]));
    assert_eq!((x509, jwt), (strings(&[OWN]), strings(&[OWN])));
    assert!(snap.federated_bundles_for([]).is_empty());
}

#[test]
fn the_own_trust_domain_is_never_a_federated_bundle() {
    let shared = SharedResponses::new();
    let snap = {
        let mut s = Arc::unwrap_or_clone(snapshot(vec![sync_entry("fed", 1000, &["example.org"])]));
        s.federated
            .insert("example.org".into(), bundle("example.org"));
        Arc::new(s)
    };
    assert_eq!(seen(&shared, &snap, 1000)[0], Vec::<String>::new());
    let x509 = bundles(&shared, &snap, StreamKind::X509Bundles, &caller(1000)).unwrap();
    let own = &decode::<pb::X509BundlesResponse>(&x509).bundles[OWN];
    assert_eq!(
        own, b"own root",
        "our roots, not a look-alike federated bundle"
    );
}
