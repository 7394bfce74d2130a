//! What a hardware certificate path must satisfy beyond signatures and validity: the
//! profile of its leaf (keyUsage, the TCG EK extendedKeyUsage, not a CA), basicConstraints
//! and keyUsage of every issuer, pathLenConstraint and name constraints along the path, and
//! no critical extension ironroot does not process. Pure functions of parsed certificates:
//! each failure is one [`CertRuleError`] variant naming the rule and the certificate.
//!
//! Profiles: the TCG EK Credential Profile for TPM Family 2.0 (§3.2: keyUsage present, with
//! keyEncipherment for an RSA EK and keyAgreement for an ECC EK; extendedKeyUsage with
//! tcg-kp-EKCertificate 2.23.133.8.1; basicConstraints cA=false), and the DevID profile of
//! IEEE 802.1AR / TCG "TPM 2.0 Keys for Device Identity" (keyUsage digitalSignature).
//! swtpm_setup's EK certificates carry all of these (critical keyUsage, the EKU, a critical
//! directoryName subjectAltName, critical cA=false).

use std::fmt;

use der::asn1::ObjectIdentifier;
use der::Decode;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, NameConstraints, SubjectAltName,
};
use x509_cert::ext::Extension;
use x509_cert::Certificate;

use super::names;

const BASIC_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.19");
const KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.15");
const EXT_KEY_USAGE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.37");
const SUBJECT_ALT_NAME: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.17");
const NAME_CONSTRAINTS: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.30");
const SUBJECT_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.14");
const AUTHORITY_KEY_ID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.35");

/// tcg-kp-EKCertificate.
pub(super) const TCG_KP_EK_CERTIFICATE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("2.23.133.8.1");

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-RSAES-OAEP: some older EK certificates name their RSA key so.
const RSAES_OAEP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.7");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Extensions whose meaning is enforced here (or that constrain nothing: key identifiers).
/// Any other extension marked critical is rejected: RFC 5280 §4.2 requires a verifier to
/// reject a certificate with a critical extension it does not process.
const PROCESSED: [ObjectIdentifier; 7] = [
    BASIC_CONSTRAINTS,
    KEY_USAGE,
    EXT_KEY_USAGE,
    SUBJECT_ALT_NAME,
    NAME_CONSTRAINTS,
    SUBJECT_KEY_ID,
    AUTHORITY_KEY_ID,
];

/// Which hardware certificate a path is checked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertProfile {
    /// A TPM endorsement key certificate (`tpm_ek`).
    Ek,
    /// A DevID certificate (`tpm_devid`).
    DevId,
}

impl fmt::Display for CertProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ek => "EK certificate",
            Self::DevId => "DevID certificate",
        })
    }
}

/// A certificate path that breaks a rule. Each variant is one rule; `Display` names the
/// rule (in brackets) and the certificate (its subject, or serial and issuer when the
/// subject is empty, as in EK certificates).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertRuleError {
    /// The leaf's keyUsage is missing or lacks the bit its profile requires.
    #[error(
        "[leaf-key-usage] the {profile} '{cert}' must have a keyUsage with {required} ({found})"
    )]
    LeafKeyUsage {
        /// What the leaf was checked as.
        profile: CertProfile,
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The bit the profile requires.
        required: &'static str,
        /// What the certificate has.
        found: String,
    },
    /// The EK certificate's key is neither RSA nor ECC.
    #[error("[ek-key-algorithm] the EK certificate '{cert}' has a {oid} key; an EK is RSA or ECC")]
    EkKeyAlgorithm {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The object identifier, dotted.
        oid: String,
    },
    /// The EK certificate lacks the tcg-kp-EKCertificate extendedKeyUsage.
    #[error("[ek-extended-key-usage] the EK certificate '{cert}' does not have extendedKeyUsage tcg-kp-EKCertificate (2.23.133.8.1) ({found}); a certificate without it is not an EK certificate (allow-list the EK hash to accept this TPM anyway)")]
    EkExtendedKeyUsage {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// What the certificate has.
        found: String,
    },
    /// The leaf says it is a CA.
    #[error("[leaf-not-ca] the {profile} '{cert}' is a CA certificate (basicConstraints cA=true), not a device certificate")]
    LeafIsCa {
        /// What the leaf was checked as.
        profile: CertProfile,
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
    },
    /// An issuer (intermediate or anchor) without basicConstraints cA=true.
    #[error("[issuer-is-ca] '{cert}', which issued '{issued}', is not a CA certificate (no basicConstraints cA=true)")]
    IssuerNotCa {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The certificate it issued.
        issued: String,
    },
    /// An issuer whose keyUsage lacks keyCertSign.
    #[error(
        "[issuer-key-usage] '{cert}', which issued '{issued}', has a keyUsage without keyCertSign"
    )]
    IssuerKeyUsage {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The certificate it issued.
        issued: String,
    },
    /// More intermediate CAs below a CA than its pathLenConstraint allows.
    #[error("[path-length] CA certificate '{cert}' allows {allowed} intermediate CA certificate(s) below it (pathLenConstraint), the chain has {found}")]
    PathLength {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// Its pathLenConstraint.
        allowed: u8,
        /// What the certificate has.
        found: usize,
    },
    /// A name outside a CA's permitted subtrees.
    #[error("[name-constraints] CA certificate '{ca}' permits only names under {permitted}; '{cert}' has the name '{name}'")]
    NameConstraintViolated {
        /// The CA whose nameConstraints apply.
        ca: String,
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The name outside them.
        name: String,
        /// The permitted subtrees.
        permitted: String,
    },
    /// A name constraint this verifier cannot evaluate: rejected, never ignored.
    #[error("[name-constraints] CA certificate '{cert}' has a name constraint ironroot cannot evaluate ({what}); the chain is rejected rather than the constraint ignored")]
    NameConstraintUnsupported {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The constraint, described.
        what: String,
    },
    /// A critical extension this verifier does not process.
    #[error("[critical-extensions] certificate '{cert}' has the critical extension {oid}, which ironroot does not process; the chain is rejected rather than the extension ignored")]
    UnknownCriticalExtension {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The object identifier, dotted.
        oid: String,
    },
    /// The same extension twice (RFC 5280 §4.2).
    #[error("[extension-syntax] certificate '{cert}' has the extension {oid} more than once")]
    DuplicateExtension {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The object identifier, dotted.
        oid: String,
    },
    /// An extension whose value does not decode.
    #[error(
        "[extension-syntax] certificate '{cert}' has a malformed {extension} extension: {detail}"
    )]
    MalformedExtension {
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The extension's name.
        extension: &'static str,
        /// Why it does not decode.
        detail: String,
    },
}

/// How errors name a certificate: its subject, or (EK certificates often have an empty
/// subject) its serial number and issuer.
pub fn cert_name(c: &Certificate) -> String {
    let tbs = &c.tbs_certificate;
    if tbs.subject.0.is_empty() {
        format!(
            "serial {} from {}",
            hex::encode(tbs.serial_number.as_bytes()),
            tbs.issuer
        )
    } else {
        tbs.subject.to_string()
    }
}

fn extensions(c: &Certificate) -> &[Extension] {
    c.tbs_certificate.extensions.as_deref().unwrap_or_default()
}

/// The value of extension `oid` decoded as `T` (`None` when absent).
pub(super) fn decoded<'a, T: Decode<'a>>(
    c: &'a Certificate,
    oid: ObjectIdentifier,
    extension: &'static str,
) -> Result<Option<T>, CertRuleError> {
    let Some(e) = extensions(c).iter().find(|e| e.extn_id == oid) else {
        return Ok(None);
    };
    T::from_der(e.extn_value.as_bytes())
        .map(Some)
        .map_err(|err| CertRuleError::MalformedExtension {
            cert: cert_name(c),
            extension,
            detail: err.to_string(),
        })
}

/// Each extension at most once, and no critical extension outside [`PROCESSED`].
fn check_extensions(c: &Certificate) -> Result<(), CertRuleError> {
    let exts = extensions(c);
    for (i, e) in exts.iter().enumerate() {
        if exts[..i].iter().any(|p| p.extn_id == e.extn_id) {
            return Err(CertRuleError::DuplicateExtension {
                cert: cert_name(c),
                oid: e.extn_id.to_string(),
            });
        }
        if e.critical && !PROCESSED.contains(&e.extn_id) {
            return Err(CertRuleError::UnknownCriticalExtension {
                cert: cert_name(c),
                oid: e.extn_id.to_string(),
            });
        }
    }
    Ok(())
}

fn basic_constraints(c: &Certificate) -> Result<Option<BasicConstraints>, CertRuleError> {
    decoded(c, BASIC_CONSTRAINTS, "basicConstraints")
}

fn key_usage(c: &Certificate) -> Result<Option<KeyUsage>, CertRuleError> {
    decoded(c, KEY_USAGE, "keyUsage")
}

fn describe_key_usage(ku: &Option<KeyUsage>) -> String {
    match ku {
        None => "it has no keyUsage extension".into(),
        Some(k) => format!("it has {:?}", k.0),
    }
}

/// The leaf's profile: not a CA, the keyUsage bit its key type needs, and for an EK the
/// tcg-kp-EKCertificate extendedKeyUsage.
pub fn check_leaf(profile: CertProfile, leaf: &Certificate) -> Result<(), CertRuleError> {
    if basic_constraints(leaf)?.is_some_and(|b| b.ca) {
        return Err(CertRuleError::LeafIsCa {
            profile,
            cert: cert_name(leaf),
        });
    }
    let ku = key_usage(leaf)?;
    let (required, bit) = match profile {
        CertProfile::DevId => ("digitalSignature", KeyUsages::DigitalSignature),
        CertProfile::Ek => {
            let alg = &leaf.tbs_certificate.subject_public_key_info.algorithm.oid;
            if *alg == RSA_ENCRYPTION || *alg == RSAES_OAEP {
                ("keyEncipherment (an RSA EK)", KeyUsages::KeyEncipherment)
            } else if *alg == EC_PUBLIC_KEY {
                ("keyAgreement (an ECC EK)", KeyUsages::KeyAgreement)
            } else {
                return Err(CertRuleError::EkKeyAlgorithm {
                    cert: cert_name(leaf),
                    oid: alg.to_string(),
                });
            }
        }
    };
    if !ku.as_ref().is_some_and(|k| k.0.contains(bit)) {
        return Err(CertRuleError::LeafKeyUsage {
            profile,
            cert: cert_name(leaf),
            required,
            found: describe_key_usage(&ku),
        });
    }
    if profile == CertProfile::Ek {
        let eku: Option<ExtendedKeyUsage> = decoded(leaf, EXT_KEY_USAGE, "extendedKeyUsage")?;
        let ok = eku
            .as_ref()
            .is_some_and(|e| e.0.contains(&TCG_KP_EK_CERTIFICATE));
        if !ok {
            let found = match eku {
                None => "it has no extendedKeyUsage extension".to_string(),
                Some(e) => {
                    let oids: Vec<String> = e.0.iter().map(|o| o.to_string()).collect();
                    format!("it has {}", oids.join(", "))
                }
            };
            return Err(CertRuleError::EkExtendedKeyUsage {
                cert: cert_name(leaf),
                found,
            });
        }
    }
    Ok(())
}

/// An issuer at `depth` (1 = the leaf's issuer) of `path`: a CA that may sign certificates,
/// whose pathLenConstraint admits the `depth - 1` intermediate CAs below it. Self-issued
/// intermediates count too (stricter than RFC 5280 §6.1.4, never looser).
fn check_issuer(path: &[Certificate], depth: usize) -> Result<(), CertRuleError> {
    let (Some(ca), Some(issued)) = (path.get(depth), path.get(depth - 1)) else {
        return Ok(());
    };
    let bc = basic_constraints(ca)?;
    let Some(bc) = bc.filter(|b| b.ca) else {
        return Err(CertRuleError::IssuerNotCa {
            cert: cert_name(ca),
            issued: cert_name(issued),
        });
    };
    if key_usage(ca)?.is_some_and(|k| !k.0.contains(KeyUsages::KeyCertSign)) {
        return Err(CertRuleError::IssuerKeyUsage {
            cert: cert_name(ca),
            issued: cert_name(issued),
        });
    }
    let below = depth - 1;
    if let Some(allowed) = bc.path_len_constraint {
        if below > usize::from(allowed) {
            return Err(CertRuleError::PathLength {
                cert: cert_name(ca),
                allowed,
                found: below,
            });
        }
    }
    if let Some(nc) = decoded::<NameConstraints>(ca, NAME_CONSTRAINTS, "nameConstraints")? {
        let san = |c: &Certificate| -> Result<Option<SubjectAltName>, CertRuleError> {
            decoded(c, SUBJECT_ALT_NAME, "subjectAltName")
        };
        for c in &path[..depth] {
            names::check(ca, &nc, c, san(c)?.as_ref())?;
        }
    }
    Ok(())
}

/// Checks a built path: `path[0]` is the leaf, the last certificate the trust anchor (whose
/// constraints are enforced too), each certificate issued by the next.
pub fn check_path(profile: CertProfile, path: &[Certificate]) -> Result<(), CertRuleError> {
    for c in path {
        check_extensions(c)?;
    }
    if let Some(leaf) = path.first() {
        check_leaf(profile, leaf)?;
    }
    for depth in 1..path.len() {
        check_issuer(path, depth)?;
    }
    Ok(())
}
