//! Why an SDS request is refused. Each variant names the rule in words an
//! operator (or the Envoy configuration's author) can act on; the gRPC code
//! is SPIRE's where SPIRE has one.

use tonic::Status;

/// The resource type SDS serves (the only `type_url` accepted).
pub(crate) const SECRET_TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum SdsError {
    /// The agent has no trust bundle yet (it has not synced with its server
    /// since it started): nothing it could serve would be complete.
    #[error("the agent has not synced with its server yet; retry shortly")]
    NotSynced,
    /// Names that are none of: a SPIFFE ID of one of the caller's own
    /// X.509-SVIDs, the default SVID alias (when the caller has an SVID), the
    /// bundle aliases, or the ID of a trust domain the agent has a bundle for.
    #[error(
        "workload is not authorized for the requested resources {names:?}: a resource name is \
         the SPIFFE ID of one of the caller's own SVIDs, {default_svid:?} (its first SVID), \
         {default_bundle:?}, {all_bundles:?}, or spiffe://<trust domain> of a bundle the agent has"
    )]
    NotAuthorized {
        names: Vec<String>,
        default_svid: String,
        default_bundle: String,
        all_bundles: String,
    },
    /// The all-bundles resource exists only as a SPIFFE certificate validator
    /// config, which the caller said it cannot use.
    #[error(
        "resource {name:?} (all bundles) needs Envoy's SPIFFE certificate validator, which this \
         Envoy cannot use (it is older than 1.18, or disable_spiffe_cert_validation is set): \
         request {default_bundle:?} or a trust domain ID instead"
    )]
    AllBundlesNeedSpiffeValidator {
        name: String,
        default_bundle: String,
    },
    /// A `type_url` other than the Secret type.
    #[error("type_url {got:?} is not served here: SDS serves {SECRET_TYPE_URL}")]
    UnsupportedType { got: String },
}

impl From<SdsError> for Status {
    fn from(e: SdsError) -> Status {
        let msg = e.to_string();
        match e {
            SdsError::NotSynced => Status::unavailable(msg),
            SdsError::NotAuthorized { .. } | SdsError::UnsupportedType { .. } => {
                Status::invalid_argument(msg)
            }
            SdsError::AllBundlesNeedSpiffeValidator { .. } => Status::failed_precondition(msg),
        }
    }
}
