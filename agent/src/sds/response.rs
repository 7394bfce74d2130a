//! One `DiscoveryResponse`: the secrets a request names, for one caller, from
//! one cache snapshot (shared by FetchSecrets and StreamSecrets).

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::util::pack_any;
use ironroot_api::selector::Selector;

use super::config::SdsConfig;
use super::error::{SdsError, SECRET_TYPE_URL};
use super::resources::CallerSecrets;
use super::secrets::BundleFormat;
use crate::cache::Snapshot;

/// Answers `req` (its names; `node`, which may come from an earlier request
/// on the stream, decides how bundles are expressed). `version_info` and
/// `nonce` are left empty: FetchSecrets keeps them so, StreamSecrets sets them.
pub(super) fn build(
    snap: &Snapshot,
    selectors: &[Selector],
    now: i64,
    req: &DiscoveryRequest,
    node: Option<&Node>,
    cfg: &SdsConfig,
) -> Result<DiscoveryResponse, SdsError> {
    // An empty type URL is taken as the Secret type (SPIRE does not check it).
    if !req.type_url.is_empty() && req.type_url != SECRET_TYPE_URL {
        return Err(SdsError::UnsupportedType {
            got: req.type_url.clone(),
        });
    }
    let format = BundleFormat::for_node(node, cfg.disable_spiffe_cert_validation);
    let secrets =
        CallerSecrets::new(snap, selectors, now)?.resolve(&req.resource_names, cfg, format)?;
    Ok(DiscoveryResponse {
        resources: secrets.into_iter().map(pack_any).collect(),
        type_url: SECRET_TYPE_URL.to_string(),
        ..Default::default()
    })
}
