//! SPIFFE Federation (docs/federation.md): this trust domain's bundle endpoint
//! ([`endpoint`], `[federation.bundle_endpoint]`) and the relationships whose bundles the
//! server fetches by itself ([`poller`], `[[federation.federates_with]]`), judged by the
//! pure rules of [`validate`] before they replace a stored bundle.
//!
//! Relationships are configuration only (no admin-API verbs yet); the bundles they bring
//! are the store's federated bundles, listed and set with `ironroot-server bundle`.

pub(crate) mod endpoint;
pub(crate) mod poller;
pub(crate) mod validate;

pub use endpoint::EndpointError;
