//! Workload API responses, built from a cache snapshot and the entries the
//! caller was attested to: federated bundles only as
//! [`Snapshot::federated_bundles_for`] allows.

use std::collections::{BTreeMap, HashMap};

use ironroot_api::bundle::TrustBundle;
use ironroot_api::workload as pb;

use crate::cache::{CachedEntry, CachedSvid, Snapshot};

fn td_id(td: &str) -> String {
    format!("spiffe://{td}")
}

/// Federated X.509 bundles, keyed by trust domain SPIFFE ID (DER certificates concatenated).
fn federated_x509(federated: &BTreeMap<&str, &TrustBundle>) -> HashMap<String, Vec<u8>> {
    federated
        .iter()
        .map(|(td, b)| (td_id(td), b.x509_authorities.concat()))
        .collect()
}

/// The X.509-SVID response with the SVIDs of `matching` (entries of `s`
/// that matched a caller).
pub(crate) fn x509_response_for(
    s: &Snapshot,
    matching: &[(&CachedEntry, &CachedSvid)],
) -> pb::X509svidResponse {
    let bundle = s.roots_concat();
    pb::X509svidResponse {
        svids: matching
            .iter()
            .map(|(e, svid)| pb::X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.chain.concat(),
                x509_svid_key: svid.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint: e.hint.clone(),
            })
            .collect(),
        crl: vec![],
        federated_bundles: federated_x509(
            &s.federated_bundles_for(matching.iter().map(|(e, _)| *e)),
        ),
    }
}

/// FetchX509Bundles for a caller attested to `entries`: our bundle and the
/// federated ones they name.
pub(crate) fn x509_bundles(
    s: &Snapshot,
    federated: &BTreeMap<&str, &TrustBundle>,
) -> pb::X509BundlesResponse {
    let mut bundles = federated_x509(federated);
    bundles.insert(td_id(&s.trust_domain), s.roots_concat());
    pb::X509BundlesResponse {
        crl: vec![],
        bundles,
    }
}

/// A JWKS with only the JWT-SVID keys (every key with a `kid`): clients of
/// FetchJWTBundles reject X.509 keys, which carry none.
fn jwt_only(b: &TrustBundle) -> Option<Vec<u8>> {
    let mut b = b.clone();
    b.x509_authorities.clear();
    b.to_jwks_json().ok().map(String::into_bytes)
}

/// FetchJWTBundles for a caller whose federated bundles are `federated` (from
/// [`Snapshot::federated_bundles_for`]): our bundle and those.
pub(crate) fn jwt_bundles(
    s: &Snapshot,
    federated: &BTreeMap<&str, &TrustBundle>,
) -> pb::JwtBundlesResponse {
    let mut bundles: HashMap<String, Vec<u8>> = federated
        .iter()
        .filter_map(|(td, b)| Some((td_id(td), jwt_only(b)?)))
        .collect();
    if let Some(own) = s.jwt_bundle.as_ref().and_then(jwt_only) {
        bundles.insert(td_id(&s.trust_domain), own);
    }
    pb::JwtBundlesResponse { bundles }
}
