//! Integration tests of the cloud and Kubernetes evidence verifiers, on evidence produced
//! the real way (openssl CMS, RS256 JWTs, API-shaped JSON) with keys the tests generate.

mod aws_iid;
mod azure_imds;
mod azure_msi;
mod gcp_iit;
mod k8s_psat;
mod properties;
