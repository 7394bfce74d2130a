//! Pure verification of cloud and Kubernetes node attestation evidence.
//!
//! Each module checks one kind of evidence the way SPIRE's node attestor of the same name
//! does (see `README.md` in this crate for the checks in order) and returns a typed identity
//! from which it derives SPIRE's selectors (without the `<attestor>:` prefix, which the
//! server adds) and the agent ID path `/spire/agent/<attestor>/...`:
//!
//! - [`aws_iid`]: the EC2 instance identity document and its RSA-2048 PKCS#7 signature;
//! - [`gcp_iit`]: the GCE instance identity token (RS256 JWT, full format);
//! - [`azure_msi`]: the managed-identity access token (RS256 JWT);
//! - [`azure_imds`]: the IMDS attested data (PKCS#7 signed by an Azure certificate chain);
//! - [`k8s_psat`]: a projected service-account token as judged by the API server's
//!   TokenReview, then the pod and node it is bound to.
//!
//! Nothing here does I/O or reads a clock: callers fetch key sets, certificates and API
//! objects, and pass `now`. Every rejection is an error naming the rule; no input panics.

#![warn(missing_docs)]

pub mod aws_iid;
pub mod azure_imds;
pub mod azure_msi;
mod ber;
pub mod gcp_iit;
pub mod jwt;
pub mod k8s_psat;
pub mod pkcs7;
mod spiffe_path;
#[cfg(feature = "test-support")]
pub mod test_support;

pub use spiffe_path::InvalidAgentPath;
