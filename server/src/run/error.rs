//! Why the server did not start, one variant per component it opens. Each message names
//! the component and embeds its cause (the binary prints it as one line).

use std::path::PathBuf;

use ironroot_hsm::HsmError;
use ironroot_tpm::verify::certchain::AnchorError;

use crate::admin::AdminSocketError;
use crate::ca::devid_ca::DevIdCaError;
use crate::ca::CaError;
use crate::node::tls::IdentityError;
use crate::node::tpm::anchors::AnchorsFileError;
use crate::node::tpm::policies::PolicySetError;
use crate::store::StoreError;

/// Why `ironroot-server run` stopped before (or while) serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// `data_dir` cannot be created.
    #[error("cannot create data_dir {}: {source}", path.display())]
    DataDir {
        /// The configured `data_dir`.
        path: PathBuf,
        /// The I/O error (permissions, read-only file system).
        #[source]
        source: std::io::Error,
    },
    /// The CA key token cannot be opened (module, token, PIN).
    #[error("cannot open the CA key HSM: {0}")]
    KeyManager(#[source] HsmError),
    /// The development key store cannot be opened.
    #[error("cannot open the software key store: {0}")]
    SoftwareKeys(#[source] HsmError),
    /// The upstream CA's token cannot be opened.
    #[error("cannot open the upstream CA token: {0}")]
    UpstreamToken(#[source] HsmError),
    /// The OpenBao server of `[upstream] kind = "openbao"` cannot be reached or refuses the
    /// credentials at start.
    #[error("cannot connect to the upstream OpenBao PKI ([upstream]): {0}")]
    UpstreamOpenBao(#[source] HsmError),
    /// The upstream CA cannot be used (its files, key or certificate).
    #[error("{0}")]
    Upstream(#[source] Box<CaError>),
    /// The store cannot be opened.
    #[error("cannot open the store: {0}")]
    Store(#[source] StoreError),
    /// The audit log cannot be opened (`[audit]`).
    #[error("cannot open the audit log: {0}")]
    Audit(#[source] ironroot_audit::AuditError),
    /// The CA cannot start (journal, keys, rotation).
    #[error("cannot start the CA: {0}")]
    Ca(#[source] Box<CaError>),
    /// The CA started but reports no usable authority.
    #[error("{0}")]
    CaStatus(#[source] Box<CaError>),
    /// A configured CA bundle cannot be loaded (`key` names the option).
    #[error("{key}: {source}")]
    Anchors {
        /// The configuration option that names the file.
        key: &'static str,
        /// Why the file cannot be loaded.
        #[source]
        source: AnchorsFileError,
    },
    /// The DevID CA cannot be opened.
    #[error("cannot open the DevID CA: {0}")]
    DevIdCa(#[source] DevIdCaError),
    /// The DevID CA's own certificate is not usable as an anchor.
    #[error("the DevID CA certificate is not an anchor: {0}")]
    DevIdAnchor(#[source] AnchorError),
    /// The measured-boot policies cannot be loaded.
    #[error("{0}")]
    Policies(#[source] PolicySetError),
    /// The admin socket cannot be bound or served.
    #[error("{0}")]
    AdminSocket(#[source] AdminSocketError),
    /// The Node API address cannot be bound.
    #[error("cannot bind the node API on {address}: {source}")]
    NodeApiBind {
        /// The configured `node_api.listen` address.
        address: String,
        /// The I/O error (address in use, not an address of this host, a privileged port).
        #[source]
        source: std::io::Error,
    },
    /// The `[metrics] listen` address cannot be bound.
    #[error("{0}")]
    Metrics(#[source] ironroot_runtime::metrics::MetricsError),
    /// The server's own SVID cannot be made.
    #[error("{0}")]
    Identity(#[source] IdentityError),
    /// A `[node_attestors.<name>]` option is unusable (found when the attestor is built).
    #[error("node_attestors.{key}: {reason}")]
    NodeAttestor {
        /// The option, under `node_attestors.`.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The OIDC discovery endpoint cannot start (`[oidc]`).
    #[error("{0}")]
    Oidc(#[source] crate::oidc::OidcError),
    /// The federation bundle endpoint cannot start (`[federation.bundle_endpoint]`).
    #[error("{0}")]
    BundleEndpoint(#[source] crate::federation::EndpointError),
    /// A start-up task on the blocking pool panicked.
    #[error("a start-up task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}
