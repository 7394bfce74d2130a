//! `azure_imds`: the IMDS attested data document, a PKCS#7 SignedData that Azure signs with
//! a `*.metadata.azure.com` TLS certificate, carrying the server's nonce.
//!
//! The signer is the one certificate the SignerInfo names (issuer and serial number); its
//! **own** chain is then verified to the configured roots. No other certificate the message
//! carries is trusted for anything (SPIRE's 2026 fix: it had accepted a signature from any
//! certificate in the bag). Intermediates come from the caller: SPIRE fetches the issuing
//! CA named in the signer's AIA extension ([`ParsedAttestedDocument::issuer_url`]) from
//! `www.microsoft.com`; an offline deployment configures them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use der::Encode;
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::{Deserialize, Serialize};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::AuthorityInfoAccessSyntax;

use crate::pkcs7::{ParsedSignedData, Pkcs7Error};
use crate::InvalidAgentPath;

/// The attestor's name.
pub const ATTESTOR: &str = "azure_imds";
/// SPIRE's default `allowed_metadata_domains`.
pub const DEFAULT_METADATA_DOMAIN: &str = "metadata.azure.com";
/// The only host SPIRE fetches the signer's issuing certificate from.
pub const ISSUER_HOST: &str = "www.microsoft.com";
/// Skew allowed on the document's `timeStamp`.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// IMDS `/metadata/attested/document` response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedDocument {
    /// `pkcs7`.
    pub encoding: String,
    /// Base64 DER PKCS#7 SignedData.
    pub signature: String,
}

/// Untrusted metadata the agent adds (SPIRE's `metadata`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentMetadata {
    /// The tenant domain the agent is configured with (`tenant_domain`).
    pub agent_domain: String,
    /// The VM scale set name, if any.
    #[serde(default)]
    pub vmss_name: Option<String>,
}

/// The agent's challenge response, as SPIRE's agent sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChallengeResponse {
    /// The attested document.
    pub document: AttestedDocument,
    /// Untrusted metadata.
    pub metadata: AgentMetadata,
}

impl ChallengeResponse {
    /// Parses the agent's JSON challenge response.
    pub fn from_json(payload: &[u8]) -> Result<Self, AzureImdsError> {
        serde_json::from_slice(payload).map_err(|e| AzureImdsError::MalformedPayload {
            reason: e.to_string(),
        })
    }
}

/// Why an attested document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AzureImdsError {
    /// The agent's response is not the expected JSON.
    #[error("azure_imds challenge response is malformed: {reason}")]
    MalformedPayload {
        /// What was wrong.
        reason: String,
    },
    /// `encoding` is not `pkcs7`, or `signature` is not base64.
    #[error("azure_imds attested document is malformed: {reason}")]
    MalformedDocument {
        /// What was wrong.
        reason: String,
    },
    /// The PKCS#7 structure or its signature was refused.
    #[error("azure_imds signature refused: {0}")]
    Pkcs7(#[from] Pkcs7Error),
    /// The signer's certificate does not chain to a configured root (or is expired, or not
    /// for TLS server authentication).
    #[error("azure_imds signer's certificate does not chain to a configured root: {reason}")]
    UntrustedSigner {
        /// webpki's reason.
        reason: String,
    },
    /// The signer's AIA issuer URL is missing or not on [`ISSUER_HOST`].
    #[error("azure_imds signer's issuing-certificate URL is unusable: {reason}")]
    IssuerUrl {
        /// What was wrong.
        reason: String,
    },
    /// No DNS name of the signer's certificate is in `allowed_metadata_domains`.
    #[error("azure_imds signer's certificate names {found:?}, none within allowed_metadata_domains {allowed:?}")]
    SignerNameNotAllowed {
        /// The DNS names found.
        found: Vec<String>,
        /// The configured domains.
        allowed: Vec<String>,
    },
    /// The signed content is not the JSON Azure signs.
    #[error("azure_imds signed content is malformed: {reason}")]
    MalformedContent {
        /// What was wrong.
        reason: String,
    },
    /// The signed nonce is not the challenge this server sent: a replayed document.
    #[error("azure_imds signed nonce {found:?} is not the challenge sent ({expected:?}): the document is replayed or for another attestation")]
    NonceMismatch {
        /// The challenge.
        expected: String,
        /// The nonce in the document.
        found: String,
    },
    /// The document's `timeStamp.expiresOn` is past.
    #[error(
        "azure_imds document expired at {expires_on} (now {now}, clock skew allowed {skew_secs} s)"
    )]
    Expired {
        /// expiresOn, seconds since the Unix epoch.
        expires_on: i64,
        /// Now.
        now: i64,
        /// Allowed skew.
        skew_secs: u64,
    },
    /// The document's `timeStamp.createdOn` is in the future.
    #[error("azure_imds document created in the future at {created_on} (now {now}, clock skew allowed {skew_secs} s)")]
    CreatedInFuture {
        /// createdOn, seconds since the Unix epoch.
        created_on: i64,
        /// Now.
        now: i64,
        /// Allowed skew.
        skew_secs: u64,
    },
    /// The agent's tenant domain is not configured.
    #[error("azure_imds tenant domain {domain:?} is not in tenants")]
    TenantNotAllowed {
        /// The agent's domain.
        domain: String,
    },
    /// The subscription is not in the tenant's `restrict_to_subscriptions`.
    #[error(
        "azure_imds subscription {subscription:?} is not in the tenant's restrict_to_subscriptions"
    )]
    SubscriptionNotAllowed {
        /// The signed subscription.
        subscription: String,
    },
    /// A value is not usable in an agent ID path.
    #[error(transparent)]
    AgentPath(#[from] InvalidAgentPath),
}

/// Per-tenant settings, keyed by tenant domain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantConfig {
    /// The tenant ID the domain resolves to (SPIRE looks it up once through the domain's
    /// OpenID configuration; the caller does, or configures it).
    pub tenant_id: String,
    /// Subscriptions allowed; empty allows any in the tenant.
    pub restrict_to_subscriptions: BTreeSet<String>,
}

/// What the verifier trusts.
#[derive(Debug, Clone)]
pub struct AzureImdsConfig {
    /// Root certificates (DER) the signer's chain must end at.
    pub roots: Vec<CertificateDer<'static>>,
    /// DNS domains the signer's certificate must be in (equal or a subdomain).
    pub allowed_metadata_domains: Vec<String>,
    /// Tenants by domain.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Skew allowed on the document's timestamps.
    pub clock_skew: Duration,
}

impl AzureImdsConfig {
    /// Default domains and skew.
    pub fn new(
        roots: Vec<CertificateDer<'static>>,
        tenants: BTreeMap<String, TenantConfig>,
    ) -> Self {
        Self {
            roots,
            allowed_metadata_domains: vec![DEFAULT_METADATA_DOMAIN.to_owned()],
            tenants,
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }
}

/// The signed content (the fields used; others such as `plan` and `sku` are ignored).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Content {
    nonce: String,
    subscription_id: String,
    vm_id: String,
    time_stamp: TimeStamp,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TimeStamp {
    created_on: String,
    expires_on: String,
}

/// An attested document parsed, with its signer's certificate identified; not verified.
#[derive(Debug, Clone)]
pub struct ParsedAttestedDocument {
    signed: ParsedSignedData,
    signer_der: Vec<u8>,
}

impl ParsedAttestedDocument {
    /// Decodes the document and finds the certificate its one SignerInfo names.
    pub fn parse(doc: &AttestedDocument) -> Result<Self, AzureImdsError> {
        if doc.encoding != "pkcs7" {
            return Err(AzureImdsError::MalformedDocument {
                reason: format!("encoding is {:?}, not \"pkcs7\"", doc.encoding),
            });
        }
        let body: String = doc
            .signature
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| AzureImdsError::MalformedDocument {
                reason: format!("signature is not base64: {e}"),
            })?;
        let signed = ParsedSignedData::from_ber(&der)?;
        let signer_der = signed.signer_certificate()?.to_der().map_err(|e| {
            AzureImdsError::MalformedDocument {
                reason: format!("signer certificate: {e}"),
            }
        })?;
        Ok(Self { signed, signer_der })
    }

    /// The signer's issuing-certificate URL (AIA caIssuers), for the caller to fetch the
    /// intermediate; refused unless its host is exactly [`ISSUER_HOST`] (SPIRE's rule).
    pub fn issuer_url(&self) -> Result<String, AzureImdsError> {
        let bad = |reason: String| AzureImdsError::IssuerUrl { reason };
        let cert = self.signed.signer_certificate()?;
        let aia = cert
            .tbs_certificate
            .get::<AuthorityInfoAccessSyntax>()
            .map_err(|e| bad(format!("AIA extension: {e}")))?
            .ok_or_else(|| bad("no AIA extension".into()))?
            .1;
        const CA_ISSUERS: der::asn1::ObjectIdentifier =
            der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");
        let url = aia
            .0
            .iter()
            .filter(|d| d.access_method == CA_ISSUERS)
            .find_map(|d| match &d.access_location {
                GeneralName::UniformResourceIdentifier(u) if !u.as_str().is_empty() => {
                    Some(u.as_str().to_owned())
                }
                _ => None,
            })
            .ok_or_else(|| bad("no caIssuers URL in the AIA extension".into()))?;
        let host = url
            .split_once("://")
            .map(|(_, rest)| rest)
            .unwrap_or("")
            .split(['/', '?', '#'])
            .next()
            .unwrap_or("");
        if host != ISSUER_HOST {
            return Err(bad(format!("{url:?} is not on {ISSUER_HOST}")));
        }
        Ok(url)
    }

    /// Verifies the document. Checks, in order: the named signer's key signed the content;
    /// the signer's own chain reaches a configured root through `intermediates` (at `now`,
    /// for TLS server authentication); one of its DNS names is within
    /// `allowed_metadata_domains`; the content parses; its nonce is `expected_nonce`; it
    /// has not expired and was not created in the future (with the skew); `vmId` is a UUID
    /// and `subscriptionId` non-empty; the agent's tenant domain is configured and the
    /// subscription allowed; the IDs are usable in an agent ID path.
    pub fn verify(
        &self,
        config: &AzureImdsConfig,
        intermediates: &[CertificateDer<'_>],
        expected_nonce: &str,
        metadata: &AgentMetadata,
        now: SystemTime,
    ) -> Result<AzureVmIdentity, AzureImdsError> {
        let signer = self.signed.signer_certificate()?;
        let content = self
            .signed
            .content()
            .ok_or_else(|| AzureImdsError::MalformedDocument {
                reason: "the signature carries no content (detached)".into(),
            })?;
        self.signed.verify_signature(signer, content)?;

        let untrusted = |e: webpki::Error| AzureImdsError::UntrustedSigner {
            reason: format!("{e:?}"),
        };
        let signer_der = CertificateDer::from(self.signer_der.as_slice());
        let ee = webpki::EndEntityCert::try_from(&signer_der).map_err(untrusted)?;
        let anchors = config
            .roots
            .iter()
            .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AzureImdsError::UntrustedSigner {
                reason: format!("a configured root is unusable: {e:?}"),
            })?;
        let now_secs = crate::jwt::unix_now(now);
        let time =
            UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now_secs).unwrap_or(0)));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            intermediates,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(untrusted)?;
        let names: Vec<String> = ee.valid_dns_names().map(str::to_owned).collect();
        let allowed = |name: &str| {
            let name = name.as_bytes();
            config.allowed_metadata_domains.iter().any(|d| {
                let d = d.as_bytes();
                name.eq_ignore_ascii_case(d)
                    || (name.len() > d.len()
                        && name[name.len() - d.len()..].eq_ignore_ascii_case(d)
                        && name[name.len() - d.len() - 1] == b'.')
            })
        };
        if !names.iter().any(|n| allowed(n)) {
            return Err(AzureImdsError::SignerNameNotAllowed {
                found: names,
                allowed: config.allowed_metadata_domains.clone(),
            });
        }

        let c: Content =
            serde_json::from_slice(content).map_err(|e| AzureImdsError::MalformedContent {
                reason: e.to_string(),
            })?;
        if c.nonce != expected_nonce {
            return Err(AzureImdsError::NonceMismatch {
                expected: expected_nonce.to_owned(),
                found: c.nonce,
            });
        }
        let skew = i64::try_from(config.clock_skew.as_secs()).unwrap_or(i64::MAX);
        let skew_secs = config.clock_skew.as_secs();
        let created_on = parse_timestamp(&c.time_stamp.created_on, "timeStamp.createdOn")?;
        let expires_on = parse_timestamp(&c.time_stamp.expires_on, "timeStamp.expiresOn")?;
        if now_secs.saturating_sub(skew) >= expires_on {
            return Err(AzureImdsError::Expired {
                expires_on,
                now: now_secs,
                skew_secs,
            });
        }
        if now_secs.saturating_add(skew) < created_on {
            return Err(AzureImdsError::CreatedInFuture {
                created_on,
                now: now_secs,
                skew_secs,
            });
        }
        if !is_uuid(&c.vm_id) {
            return Err(AzureImdsError::MalformedContent {
                reason: format!("vmId {:?} is not a UUID", c.vm_id),
            });
        }
        if c.subscription_id.is_empty() {
            return Err(AzureImdsError::MalformedContent {
                reason: "subscriptionId is empty".into(),
            });
        }
        let tenant = config.tenants.get(&metadata.agent_domain).ok_or_else(|| {
            AzureImdsError::TenantNotAllowed {
                domain: metadata.agent_domain.clone(),
            }
        })?;
        if !tenant.restrict_to_subscriptions.is_empty()
            && !tenant
                .restrict_to_subscriptions
                .contains(&c.subscription_id)
        {
            return Err(AzureImdsError::SubscriptionNotAllowed {
                subscription: c.subscription_id,
            });
        }
        let identity = AzureVmIdentity {
            tenant_id: tenant.tenant_id.clone(),
            subscription_id: c.subscription_id,
            vm_id: c.vm_id,
            nonce: c.nonce,
            created_on,
            expires_on,
            vmss_name: metadata.vmss_name.clone(),
        };
        identity.agent_path()?;
        Ok(identity)
    }
}

/// An Azure VM whose attested document Azure signed for this attestation's nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AzureVmIdentity {
    /// The configured tenant ID of the agent's domain.
    pub tenant_id: String,
    /// `subscriptionId` (signed).
    pub subscription_id: String,
    /// `vmId` (signed).
    pub vm_id: String,
    /// `nonce` (signed; equal to the challenge).
    pub nonce: String,
    /// `timeStamp.createdOn`, seconds since the epoch.
    pub created_on: i64,
    /// `timeStamp.expiresOn`, seconds since the epoch.
    pub expires_on: i64,
    /// The agent's (unsigned) scale set name: for the caller's Resource Graph lookup only.
    pub vmss_name: Option<String>,
}

impl AzureVmIdentity {
    /// Selectors derivable from the signed document, without the `azure_imds:` prefix:
    /// `subscription-id:<sub>`. SPIRE's others (`vm-name:`, `vm-location:`,
    /// `resource-group:`, `vmss-name:`, `vm-tag:`, network selectors) come from Azure
    /// Resource Graph.
    pub fn selectors(&self) -> Vec<String> {
        vec![format!("subscription-id:{}", self.subscription_id)]
    }

    /// SPIRE's default agent ID path
    /// `/spire/agent/azure_imds/<tenant_id>/<subscription_id>/<vm_id>`, the TOFU key.
    pub fn agent_path(&self) -> Result<String, InvalidAgentPath> {
        crate::spiffe_path::agent_path(
            ATTESTOR,
            &[
                ("tenant ID", &self.tenant_id),
                ("subscription ID", &self.subscription_id),
                ("VM ID", &self.vm_id),
            ],
        )
    }

    /// SPIRE: `CanReattest=false` (TOFU; the nonce stops replays within one attestation).
    pub const fn can_reattest(&self) -> bool {
        false
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Azure's attested-data time format, `MM/DD/YY HH:MM:SS -0000` (UTC).
fn parse_timestamp(s: &str, field: &'static str) -> Result<i64, AzureImdsError> {
    let bad = || AzureImdsError::MalformedContent {
        reason: format!("{field} {s:?} is not MM/DD/YY HH:MM:SS -0000"),
    };
    let b = s.as_bytes();
    if !s.is_ascii() || b.len() != 23 || &b[17..] != b" -0000" {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, AzureImdsError> {
        let part = &s[r];
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    if b[2] != b'/' || b[5] != b'/' || b[8] != b' ' || b[11] != b':' || b[14] != b':' {
        return Err(bad());
    }
    let (month, day, year) = (num(0..2)?, num(3..5)?, 2000 + num(6..8)?);
    let (hour, min, sec) = (num(9..11)?, num(12..14)?, num(15..17)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return Err(bad());
    }
    Ok(days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats `unix` seconds the way Azure writes `timeStamp` (for test documents).
pub fn format_timestamp(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Inverse of days_from_civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{m:02}/{d:02}/{:02} {:02}:{:02}:{:02} -0000",
        y.rem_euclid(100),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_and_match_known_dates() {
        // 2020-11-09T22:13:01Z, the date in Azure's documentation example.
        assert_eq!(
            parse_timestamp("11/09/20 22:13:01 -0000", "t").unwrap(),
            1_604_959_981
        );
        for t in [
            0i64,
            951_782_400,
            1_604_959_981,
            1_709_251_199,
            4_102_444_799,
        ] {
            if t >= 946_684_800 {
                assert_eq!(parse_timestamp(&format_timestamp(t), "t").unwrap(), t);
            }
        }
        for bad in [
            "",
            "11/09/20 22:13:01",
            "13/09/20 22:13:01 -0000",
            "11/09/20 22:13:01 +0100",
            "1a/09/20 22:13:01 -0000",
        ] {
            assert!(parse_timestamp(bad, "t").is_err(), "{bad}");
        }
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("02aab8a4-74ef-476e-8182-f6d2ba4166a6"));
        assert!(!is_uuid("02aab8a4-74ef-476e-8182-f6d2ba4166a"));
        assert!(!is_uuid("../../x"));
    }
}
