//! ironroot server library: the CA, the store, the admin API and the CLI
//! verbs, so integration tests and benchmarks drive the same code as the binary.

#![warn(missing_docs)]

pub mod admin;
pub mod audit;
pub(crate) mod authorized;
pub mod boot_tools;
pub mod ca;
pub(crate) mod changes;
pub mod cli;
pub mod client;
pub mod config;
pub mod federation;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
pub(crate) mod http1;
pub(crate) mod metrics;
pub mod node;
pub mod oidc;
pub mod run;
pub(crate) mod status;
pub mod store;
pub(crate) mod tls_files;
