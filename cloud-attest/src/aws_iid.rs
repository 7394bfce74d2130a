//! `aws_iid`: the EC2 instance identity document, signed by AWS (RSA-2048 PKCS#7).
//!
//! The identity is read **only** from the content inside the PKCS#7 SignedData. The agent
//! also sends the document as IMDS served it (the "unsigned copy"); when it differs from
//! the signed content by a single byte the evidence is refused (SPIRE trusted that copy
//! before its 2026 fix, letting any signed document vouch for any identity).
//!
//! The AWS certificate is chosen by the region named in the signed content, from the
//! certificates the operator configured per region (AWS publishes one per region).

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use x509_cert::Certificate;

use crate::pkcs7::{self, ParsedSignedData, Pkcs7Error};
use crate::InvalidAgentPath;

/// The attestor's name: the selector type and the agent ID path's first segment.
pub const ATTESTOR: &str = "aws_iid";

/// Largest accepted identity document.
pub const MAX_DOCUMENT_LEN: usize = 16 * 1024;

/// The agent's payload, as SPIRE's agent sends it (`caws.IIDAttestationData`): the bodies of
/// IMDS `/dynamic/instance-identity/{document,signature,rsa2048}`, verbatim.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationData {
    /// The document as IMDS served it (untrusted: only compared with the signed content).
    #[serde(default)]
    pub document: String,
    /// The legacy RSA-1024 signature over the document (not accepted; see
    /// [`AwsIidError::Rsa2048Missing`]).
    #[serde(default)]
    pub signature: String,
    /// Base64 PKCS#7 SignedData (RSA-2048), with or without PEM armour.
    #[serde(default)]
    pub rsa2048: String,
}

impl AttestationData {
    /// Parses the agent's JSON payload.
    pub fn from_json(payload: &[u8]) -> Result<Self, AwsIidError> {
        serde_json::from_slice(payload).map_err(|e| AwsIidError::MalformedPayload {
            reason: e.to_string(),
        })
    }
}

/// Why AWS instance identity evidence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AwsIidError {
    /// The agent's payload is not the JSON `{document, signature, rsa2048}`.
    #[error("aws_iid payload is malformed: {reason}")]
    MalformedPayload {
        /// What was wrong.
        reason: String,
    },
    /// No RSA-2048 PKCS#7 signature was sent (SPIRE falls back to the RSA-1024 signature;
    /// 1024-bit RSA is refused here).
    #[error(
        "aws_iid evidence has no rsa2048 PKCS#7 signature; the legacy RSA-1024 signature is \
         not accepted"
    )]
    Rsa2048Missing,
    /// The rsa2048 field is not base64.
    #[error("aws_iid rsa2048 signature is not base64: {reason}")]
    SignatureNotBase64 {
        /// Decoder message.
        reason: String,
    },
    /// The PKCS#7 structure or its signature was refused.
    #[error("aws_iid rsa2048 signature refused: {0}")]
    Pkcs7(#[from] Pkcs7Error),
    /// The signature is detached and no document was sent to check it against.
    #[error("aws_iid rsa2048 signature carries no content and no document was sent")]
    DocumentMissing,
    /// The unsigned copy of the document differs from the signed content.
    #[error(
        "aws_iid unsigned document differs from the content signed by AWS: only the signed \
         content is trusted, and a differing copy means tampering"
    )]
    UnsignedCopyDiffers,
    /// The signed content is not an instance identity document.
    #[error("aws_iid signed document is malformed: {reason}")]
    MalformedDocument {
        /// What was wrong.
        reason: String,
    },
    /// No AWS certificate is configured for the document's region.
    #[error(
        "aws_iid document is for region {region:?}, which has no AWS certificate configured \
         (add the region's RSA-2048 certificate from the AWS documentation)"
    )]
    UnknownRegion {
        /// The signed document's region.
        region: String,
    },
    /// The signer is not the AWS certificate configured for the region.
    #[error(
        "aws_iid document was not signed by the AWS certificate configured for region \
         {region:?} (wrong signer)"
    )]
    WrongSigner {
        /// The signed document's region.
        region: String,
    },
    /// The region's certificate is outside its validity at `now`.
    #[error(
        "aws_iid certificate configured for region {region:?} is not valid now ({now}; valid \
         {not_before} to {not_after}): replace it with AWS's current one"
    )]
    CertificateExpired {
        /// Region.
        region: String,
        /// Now, seconds since the Unix epoch.
        now: u64,
        /// notBefore, seconds since the Unix epoch.
        not_before: u64,
        /// notAfter, seconds since the Unix epoch.
        not_after: u64,
    },
    /// The account is not in the configured allow-list.
    #[error("aws_iid account {account:?} is not in account_allow_list")]
    AccountNotAllowed {
        /// The signed document's account.
        account: String,
    },
    /// A configured certificate could not be read.
    #[error("aws_iid certificate for region {region:?} is unusable: {reason}")]
    BadCertificate {
        /// Region.
        region: String,
        /// What was wrong.
        reason: String,
    },
    /// A value is not usable in an agent ID path.
    #[error(transparent)]
    AgentPath(#[from] InvalidAgentPath),
}

/// What the verifier trusts: AWS's certificates per region, and optionally which accounts.
#[derive(Debug, Clone, Default)]
pub struct AwsIidConfig {
    certificates: BTreeMap<String, Vec<Certificate>>,
    /// Accounts allowed to attest; `None` lets any account whose document AWS signed
    /// attest (SPIRE's behaviour without `verify_organization`).
    pub account_allow_list: Option<BTreeSet<String>>,
}

impl AwsIidConfig {
    /// An empty configuration (no region accepted until certificates are added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds AWS's RSA-2048 certificate (PEM or DER) for `region`. A region may have several
    /// (during a rotation); the one the signature names is used.
    pub fn add_region_certificate(&mut self, region: &str, cert: &[u8]) -> Result<(), AwsIidError> {
        let cert = pkcs7::certificate_from_pem_or_der(cert).map_err(|reason| {
            AwsIidError::BadCertificate {
                region: region.to_owned(),
                reason,
            }
        })?;
        self.certificates
            .entry(region.to_owned())
            .or_default()
            .push(cert);
        Ok(())
    }

    /// Regions with a certificate.
    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.certificates.keys().map(String::as_str)
    }
}

/// The fields of the instance identity document the attestor uses (as IMDS names them).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    account_id: String,
    region: String,
    availability_zone: String,
    instance_id: String,
    image_id: String,
    #[serde(default)]
    instance_type: Option<String>,
    #[serde(default)]
    architecture: Option<String>,
    #[serde(default)]
    pending_time: Option<String>,
    #[serde(default)]
    private_ip: Option<String>,
}

/// An EC2 instance whose identity document AWS signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceIdentity {
    /// `accountId`.
    pub account_id: String,
    /// `region`.
    pub region: String,
    /// `availabilityZone`.
    pub availability_zone: String,
    /// `instanceId`.
    pub instance_id: String,
    /// `imageId`.
    pub image_id: String,
    /// `instanceType`, if present.
    pub instance_type: Option<String>,
    /// `architecture`, if present.
    pub architecture: Option<String>,
    /// `pendingTime` (instance launch, RFC 3339), if present. Not a freshness signal: AWS
    /// signs the document once per launch.
    pub pending_time: Option<String>,
    /// `privateIp`, if present.
    pub private_ip: Option<String>,
    /// PKCS#7 signing-time attribute, if AWS included one.
    pub signing_time: Option<SystemTime>,
    /// The exact bytes AWS signed.
    pub signed_document: Vec<u8>,
}

impl InstanceIdentity {
    /// SPIRE's selectors from the document, sorted, without the `aws_iid:` prefix:
    /// `account_id:`, `az:`, `image:id:`, `instance:id:`, `region:`. (SPIRE's `tag:`,
    /// `sg:id:`, `sg:name:` and `iamrole:` come from EC2/IAM API calls, not the document.)
    pub fn selectors(&self) -> Vec<String> {
        let mut s = vec![
            format!("account_id:{}", self.account_id),
            format!("az:{}", self.availability_zone),
            format!("image:id:{}", self.image_id),
            format!("instance:id:{}", self.instance_id),
            format!("region:{}", self.region),
        ];
        s.sort();
        s
    }

    /// SPIRE's default agent ID path `/spire/agent/aws_iid/<account>/<region>/<instance>`.
    ///
    /// This is also the trust-on-first-use key: SPIRE refuses a second attestation
    /// producing an agent ID that is already attested (until evicted); a replayed document
    /// produces the same path.
    pub fn agent_path(&self) -> Result<String, InvalidAgentPath> {
        crate::spiffe_path::agent_path(
            ATTESTOR,
            &[
                ("account ID", &self.account_id),
                ("region", &self.region),
                ("instance ID", &self.instance_id),
            ],
        )
    }

    /// Whether an agent attested this way may attest again without being evicted first
    /// (SPIRE: `CanReattest=false`; the document is long-lived, so TOFU stops replays).
    pub const fn can_reattest(&self) -> bool {
        false
    }
}

/// Decodes the `rsa2048` body: base64 (newlines and spaces ignored), with or without a
/// `-----BEGIN PKCS7-----` armour.
fn decode_rsa2048(text: &str) -> Result<Vec<u8>, AwsIidError> {
    let body: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("-----"))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|e| AwsIidError::SignatureNotBase64 {
            reason: e.to_string(),
        })
}

/// Verifies AWS instance identity evidence. Checks, in order:
///
/// 1. an rsa2048 PKCS#7 signature is present, is base64 and a SignedData with one signer;
/// 2. the signed content is the encapsulated content (or, for a detached signature, the
///    document sent); the unsigned copy, if sent, equals it byte for byte;
/// 3. the signed content is an instance identity document;
/// 4. its region has a configured certificate, and that certificate is the signer
///    (issuer and serial) and its key verifies the signature over the content;
/// 5. the certificate is valid at `now`, and the signing time (if any) within its validity;
/// 6. the account is allowed (if an allow-list is configured);
/// 7. the IDs are usable in an agent ID path.
pub fn verify(
    config: &AwsIidConfig,
    evidence: &AttestationData,
    now: SystemTime,
) -> Result<InstanceIdentity, AwsIidError> {
    if evidence.rsa2048.trim().is_empty() {
        return Err(AwsIidError::Rsa2048Missing);
    }
    let der = decode_rsa2048(&evidence.rsa2048)?;
    let sd = ParsedSignedData::from_ber(&der)?;
    let unsigned = evidence.document.as_bytes();
    let signed: Vec<u8> = match sd.content() {
        Some(content) => {
            if !unsigned.is_empty() && unsigned != content {
                return Err(AwsIidError::UnsignedCopyDiffers);
            }
            content.to_vec()
        }
        None if unsigned.is_empty() => return Err(AwsIidError::DocumentMissing),
        None => unsigned.to_vec(),
    };
    if signed.len() > MAX_DOCUMENT_LEN {
        return Err(AwsIidError::MalformedDocument {
            reason: format!("{} bytes, more than {MAX_DOCUMENT_LEN}", signed.len()),
        });
    }
    let doc: Document =
        serde_json::from_slice(&signed).map_err(|e| AwsIidError::MalformedDocument {
            reason: e.to_string(),
        })?;
    let certs = config
        .certificates
        .get(&doc.region)
        .ok_or_else(|| AwsIidError::UnknownRegion {
            region: doc.region.clone(),
        })?;
    let cert =
        certs
            .iter()
            .find(|c| sd.names_signer(c))
            .ok_or_else(|| AwsIidError::WrongSigner {
                region: doc.region.clone(),
            })?;
    let check = sd.verify_signature(cert, &signed)?;
    let validity = &cert.tbs_certificate.validity;
    let (not_before, not_after) = (
        validity.not_before.to_system_time(),
        validity.not_after.to_system_time(),
    );
    if now < not_before || now > not_after {
        return Err(AwsIidError::CertificateExpired {
            region: doc.region,
            now: pkcs7::unix(now),
            not_before: pkcs7::unix(not_before),
            not_after: pkcs7::unix(not_after),
        });
    }
    if let Some(allowed) = &config.account_allow_list {
        if !allowed.contains(&doc.account_id) {
            return Err(AwsIidError::AccountNotAllowed {
                account: doc.account_id,
            });
        }
    }
    let identity = InstanceIdentity {
        account_id: doc.account_id,
        region: doc.region,
        availability_zone: doc.availability_zone,
        instance_id: doc.instance_id,
        image_id: doc.image_id,
        instance_type: doc.instance_type,
        architecture: doc.architecture,
        pending_time: doc.pending_time,
        private_ip: doc.private_ip,
        signing_time: check.signing_time,
        signed_document: signed,
    };
    identity.agent_path()?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicated_keys_in_the_document_are_refused() {
        let doc = br#"{"accountId":"1","region":"us-west-2","region":"eu-west-1","availabilityZone":"a","instanceId":"i","imageId":"m"}"#;
        let err = serde_json::from_slice::<Document>(doc).unwrap_err();
        assert!(
            err.to_string().contains("duplicate field `region`"),
            "{err}"
        );
    }

    #[test]
    fn rsa2048_body_tolerates_armour_and_line_breaks() {
        assert_eq!(
            decode_rsa2048("-----BEGIN PKCS7-----\nAAEC\r\nAw==\n-----END PKCS7-----\n").unwrap(),
            [0, 1, 2, 3]
        );
    }
}
