//! ValidateJWTSVID: checks a JWT-SVID against the trust domain's JWT bundle
//! (or a federated one the caller's entries federate with, by the token's
//! `sub`), with the caller's audience.

use std::collections::BTreeMap;

use ironroot_api::bundle::TrustBundle;
use ironroot_api::jwt_svid::verify_jwt_svid;
use ironroot_api::workload as pb;
use prost_types::{value::Kind, ListValue, Struct, Value};
use tonic::Status;

use crate::cache::Snapshot;
use ironroot_runtime::unix_now;

fn string(s: String) -> Value {
    Value {
        kind: Some(Kind::StringValue(s)),
    }
}

fn number(n: i64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n as f64)),
    }
}

/// The bundle a token's `sub` belongs to: ours or one of `federated` (the
/// caller's, from [`Snapshot::federated_bundles_for`]).
fn bundle_for<'s>(
    s: &'s Snapshot,
    federated: &BTreeMap<&'s str, &'s TrustBundle>,
    token: &str,
) -> Result<&'s TrustBundle, Status> {
    // The subject's trust domain picks the bundle; the signature is what is trusted.
    let td = ironroot_api::jwt_svid::unverified_trust_domain(token)
        .map_err(|e| Status::invalid_argument(format!("the token is not a JWT-SVID: {e}")))?;
    s.jwt_bundle_of(&td, federated).ok_or_else(|| {
        if td == s.trust_domain {
            // Parse failures were reported when the sync stored the bundle.
            Status::internal(format!("no usable JWT bundle for trust domain {td}"))
        } else {
            Status::invalid_argument(format!(
                "no bundle for trust domain {td} (none of the caller's entries federates with it)"
            ))
        }
    })
}

/// Validates `token` for a caller whose federated bundles are `federated`.
pub(crate) fn validate<'s>(
    s: &'s Snapshot,
    federated: &BTreeMap<&'s str, &'s TrustBundle>,
    token: &str,
    audience: &str,
) -> Result<pb::ValidateJwtsvidResponse, Status> {
    let bundle = bundle_for(s, federated, token)?;
    let claims = verify_jwt_svid(token, bundle, audience, unix_now())
        .map_err(|e| Status::invalid_argument(format!("JWT-SVID is not valid: {e}")))?;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert("sub".to_string(), string(claims.sub.to_string()));
    fields.insert(
        "aud".to_string(),
        Value {
            kind: Some(Kind::ListValue(ListValue {
                values: claims.aud.iter().cloned().map(string).collect(),
            })),
        },
    );
    fields.insert("exp".to_string(), number(claims.exp));
    if let Some(iat) = claims.iat {
        fields.insert("iat".to_string(), number(iat));
    }
    Ok(pb::ValidateJwtsvidResponse {
        spiffe_id: claims.sub.to_string(),
        claims: Some(Struct { fields }),
    })
}
