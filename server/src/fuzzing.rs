//! The judges of untrusted input, reachable from the fuzz targets in `server/fuzz` (cargo
//! feature `fuzzing`, off by default). Not part of the crate's API: thin wrappers that keep
//! the judges' own types crate-private.

use ironroot_api::bundle::TrustBundle;
use ironroot_api::spiffe_id::TrustDomain;

use crate::ca::upstream::{validate, Certified};
use crate::federation::validate::{judge, Verdict};

/// What the federation poller does with a fetched bundle that passed its rules.
#[derive(Debug)]
pub enum JudgedBundle {
    /// Stored: new keys or a higher sequence.
    Changed(TrustBundle),
    /// The stored bundle is current.
    Unchanged(TrustBundle),
}

/// A refusal: the rule's name (the metrics label) and the message.
#[derive(Debug)]
pub struct Refusal {
    /// The rule, e.g. `sequence`.
    pub rule: &'static str,
    /// The operator's message.
    pub message: String,
}

/// The federation poller's judge (`federation::validate::judge`): `body` fetched for
/// `trust_domain`, against the `stored` bundle; `needs_x509` for an `https_spiffe`
/// relationship.
pub fn judge_bundle(
    trust_domain: &TrustDomain,
    body: &[u8],
    stored: Option<&TrustBundle>,
    needs_x509: bool,
) -> Result<JudgedBundle, Refusal> {
    match judge(trust_domain, body, stored, needs_x509) {
        Ok(Verdict::Changed(b)) => Ok(JudgedBundle::Changed(b)),
        Ok(Verdict::Unchanged(b)) => Ok(JudgedBundle::Unchanged(b)),
        Err(e) => Err(Refusal {
            rule: e.rule(),
            message: e.to_string(),
        }),
    }
}

/// An upstream's answer that passed the checks.
#[derive(Debug)]
pub struct CheckedIntermediate {
    /// Our CA certificate.
    pub cert_der: Vec<u8>,
    /// The certificates between it and the root, issuer first.
    pub chain: Vec<Vec<u8>>,
    /// The root it chains to.
    pub roots: Vec<Vec<u8>>,
    /// Its notAfter, unix seconds.
    pub not_after: i64,
}

impl From<Certified> for CheckedIntermediate {
    fn from(c: Certified) -> Self {
        CheckedIntermediate {
            cert_der: c.cert_der,
            chain: c.chain,
            roots: c.roots,
            not_after: c.not_after,
        }
    }
}

/// The PKI upstream's certificate check (`ca::upstream::validate::check_intermediate`).
pub fn check_intermediate(
    cert_der: &[u8],
    ca_chain: &[Vec<u8>],
    our_key: &[u8],
    trust_domain: &TrustDomain,
    now: i64,
) -> Result<CheckedIntermediate, String> {
    validate::check_intermediate(cert_der, ca_chain, our_key, trust_domain, now)
        .map(Into::into)
        .map_err(|e| e.to_string())
}

/// The check of OpenBao's whole `sign-intermediate` answer (`data`, JSON with PEM
/// certificates), as the upstream runs it.
pub fn check_openbao_answer(
    data: &[u8],
    our_key: &[u8],
    trust_domain: &TrustDomain,
    now: i64,
) -> Result<CheckedIntermediate, String> {
    let value = serde_json::from_slice(data).map_err(|e| format!("not JSON: {e}"))?;
    validate::check_answer(value, our_key, trust_domain, now)
        .map(Into::into)
        .map_err(|e| e.to_string())
}
