//! The cloud node attestors' agent halves (`aws_iid`, `gcp_iit`, `azure_msi`, `azure_imds`),
//! built with the `cloud` cargo feature (off by default: the edge agent stays small). Each
//! fetches its evidence from the instance metadata service exactly as SPIRE's agent does
//! and sends it in SPIRE's payload form; only `azure_imds` answers a challenge (the
//! server's nonce). The metadata services speak plain
//! HTTP on a link-local address, so [`http`] is a small blocking HTTP/1.1 client (no TLS,
//! no new dependency), with a timeout on every step.

pub(super) mod aws_iid;
pub(super) mod azure_imds;
pub(super) mod azure_msi;
pub(super) mod gcp_iit;
mod http;

pub use http::MetadataError;
