//! PKCS#7 / CMS SignedData (RFC 5652) with exactly one signer: parsing (BER or DER) and the
//! signer's signature check.
//!
//! Shared by [`crate::aws_iid`] (signer certificate chosen by the verifier from its
//! configuration) and [`crate::azure_imds`] (signer certificate taken from the message,
//! then its own chain verified). Certificates in the message are never trusted here: the
//! caller says which certificate must have signed.

use std::time::SystemTime;

use cms::cert::IssuerAndSerialNumber;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier, SignerInfo};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::Certificate;

use crate::ber::{self, BerError};

/// Input bigger than this is refused before parsing (real documents are a few KiB).
pub const MAX_PKCS7_LEN: usize = 64 * 1024;

const ID_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const ATTR_CONTENT_TYPE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
const ATTR_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ATTR_SIGNING_TIME: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");
const SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
const SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const ECDSA_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");

/// Why a PKCS#7 SignedData was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Pkcs7Error {
    /// Larger than [`MAX_PKCS7_LEN`].
    #[error("PKCS#7 signature is {len} bytes, more than the {MAX_PKCS7_LEN} accepted")]
    TooLarge {
        /// Its size.
        len: usize,
    },
    /// Not valid BER.
    #[error("PKCS#7 signature is not valid ASN.1: {0}")]
    Encoding(#[from] BerError),
    /// Valid ASN.1, but not a SignedData as RFC 5652 defines it.
    #[error("PKCS#7 signature is not a well-formed SignedData: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// Zero or several SignerInfos: the verifiers accept exactly one signer.
    #[error("PKCS#7 SignedData must have exactly one signer, it has {found}")]
    SignerCount {
        /// SignerInfos found.
        found: usize,
    },
    /// The certificate the SignerInfo names (issuer and serial, or key identifier) is not
    /// among the message's certificates.
    #[error("the signer's certificate (named by its issuer and serial number) is not in the PKCS#7 message")]
    SignerCertificateMissing,
    /// Several of the message's certificates match the SignerInfo's identifier.
    #[error("{found} certificates in the PKCS#7 message match the signer's identifier; exactly one must")]
    SignerCertificateAmbiguous {
        /// How many matched.
        found: usize,
    },
    /// A digest, signature or key algorithm this verifier does not accept.
    #[error("PKCS#7 {what} is not accepted: {found} (accepted: {accepted})")]
    UnsupportedAlgorithm {
        /// Which algorithm field.
        what: &'static str,
        /// What was found (an OID or a description).
        found: String,
        /// What is accepted.
        accepted: &'static str,
    },
    /// A signed attribute RFC 5652 requires is absent, or present with a bad value.
    #[error("PKCS#7 signed attribute {attribute} is missing or malformed: {reason}")]
    BadSignedAttribute {
        /// Attribute name.
        attribute: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The message-digest attribute is not the digest of the content: the content was
    /// changed after signing.
    #[error("PKCS#7 message-digest does not match the signed content: the document was altered")]
    DigestMismatch,
    /// The signature does not verify with the expected signer's key.
    #[error("PKCS#7 signature does not verify with the key of the certificate {subject}")]
    BadSignature {
        /// Subject of the certificate whose key was used.
        subject: String,
    },
    /// The signing-time attribute lies outside the signer certificate's validity.
    #[error(
        "PKCS#7 signing time {signing_time} is outside the validity of the signer certificate \
         {subject} ({not_before} to {not_after})"
    )]
    SignedOutsideCertificateValidity {
        /// Subject of the signer certificate.
        subject: String,
        /// Signing time, seconds since the Unix epoch.
        signing_time: u64,
        /// Certificate notBefore, seconds since the Unix epoch.
        not_before: u64,
        /// Certificate notAfter, seconds since the Unix epoch.
        not_after: u64,
    },
}

fn malformed(reason: impl Into<String>) -> Pkcs7Error {
    Pkcs7Error::Malformed {
        reason: reason.into(),
    }
}

/// A parsed SignedData with exactly one signer. Nothing in it is verified yet.
#[derive(Debug, Clone)]
pub struct ParsedSignedData {
    content_type: ObjectIdentifier,
    content: Option<Vec<u8>>,
    certificates: Vec<Certificate>,
    signer: SignerInfo,
}

/// What a successful signature check established besides the signature itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerCheck {
    /// The signing-time attribute, if the signer included one.
    pub signing_time: Option<SystemTime>,
}

impl ParsedSignedData {
    /// Parses a ContentInfo holding SignedData, BER (as AWS sends it) or DER.
    pub fn from_ber(input: &[u8]) -> Result<Self, Pkcs7Error> {
        if input.len() > MAX_PKCS7_LEN {
            return Err(Pkcs7Error::TooLarge { len: input.len() });
        }
        let der = ber::to_der(input)?;
        let info =
            ContentInfo::from_der(&der).map_err(|e| malformed(format!("ContentInfo: {e}")))?;
        if info.content_type != ID_SIGNED_DATA {
            return Err(malformed(format!(
                "content type is {}, not signedData (1.2.840.113549.1.7.2)",
                info.content_type
            )));
        }
        let sd: SignedData = info
            .content
            .decode_as()
            .map_err(|e| malformed(format!("SignedData: {e}")))?;
        let content = match &sd.encap_content_info.econtent {
            None => None,
            Some(any) => Some(
                any.decode_as::<OctetString>()
                    .map_err(|e| malformed(format!("eContent is not an OCTET STRING: {e}")))?
                    .into_bytes(),
            ),
        };
        let mut certificates = Vec::new();
        if let Some(set) = &sd.certificates {
            for choice in set.0.iter() {
                if let cms::cert::CertificateChoices::Certificate(cert) = choice {
                    certificates.push(cert.clone());
                }
            }
        }
        let signers: Vec<&SignerInfo> = sd.signer_infos.0.iter().collect();
        let [signer] = signers.as_slice() else {
            return Err(Pkcs7Error::SignerCount {
                found: signers.len(),
            });
        };
        Ok(Self {
            content_type: sd.encap_content_info.econtent_type,
            content,
            certificates,
            signer: (*signer).clone(),
        })
    }

    /// The encapsulated content, or `None` for a detached signature.
    pub fn content(&self) -> Option<&[u8]> {
        self.content.as_deref()
    }

    /// The certificates carried in the message (untrusted).
    pub fn certificates(&self) -> &[Certificate] {
        &self.certificates
    }

    /// Whether the SignerInfo names `cert` (by issuer and serial number, or by subject key
    /// identifier).
    pub fn names_signer(&self, cert: &Certificate) -> bool {
        match &self.signer.sid {
            SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
                issuer,
                serial_number,
            }) => {
                *issuer == cert.tbs_certificate.issuer
                    && *serial_number == cert.tbs_certificate.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => {
                matches!(cert.tbs_certificate.get::<SubjectKeyIdentifier>(),
                    Ok(Some((_, found))) if found == *ski)
            }
        }
    }

    /// The one certificate in the message that the SignerInfo names.
    pub fn signer_certificate(&self) -> Result<&Certificate, Pkcs7Error> {
        let matching: Vec<&Certificate> = self
            .certificates
            .iter()
            .filter(|c| self.names_signer(c))
            .collect();
        match matching.as_slice() {
            [] => Err(Pkcs7Error::SignerCertificateMissing),
            [one] => Ok(one),
            many => Err(Pkcs7Error::SignerCertificateAmbiguous { found: many.len() }),
        }
    }

    /// Checks that `signer_cert`'s key signed `content` (the encapsulated content, or the
    /// detached document): digest and content-type attributes, signature, and that any
    /// signing time lies within the certificate's validity.
    pub fn verify_signature(
        &self,
        signer_cert: &Certificate,
        content: &[u8],
    ) -> Result<SignerCheck, Pkcs7Error> {
        let si = &self.signer;
        let digest_alg = digest_algorithm(&si.digest_alg.oid)?;
        let subject = signer_cert.tbs_certificate.subject.to_string();
        let mut signing_time = None;
        let signed_bytes = match &si.signed_attrs {
            None => {
                if self.content_type != ID_DATA {
                    return Err(malformed(
                        "no signed attributes, yet the content type is not id-data (RFC 5652 5.3)",
                    ));
                }
                content.to_vec()
            }
            Some(attrs) => {
                let mut content_type = None;
                let mut message_digest = None;
                for attr in attrs.iter() {
                    let single = || -> Result<&der::Any, Pkcs7Error> {
                        match attr.values.as_slice() {
                            [one] => Ok(one),
                            _ => Err(Pkcs7Error::BadSignedAttribute {
                                attribute: attribute_name(&attr.oid),
                                reason: format!(
                                    "{} values, exactly one allowed",
                                    attr.values.len()
                                ),
                            }),
                        }
                    };
                    if attr.oid == ATTR_CONTENT_TYPE {
                        let v = single()?.decode_as::<ObjectIdentifier>().map_err(|e| {
                            Pkcs7Error::BadSignedAttribute {
                                attribute: "content-type",
                                reason: e.to_string(),
                            }
                        })?;
                        content_type = Some(v);
                    } else if attr.oid == ATTR_MESSAGE_DIGEST {
                        let v = single()?.decode_as::<OctetString>().map_err(|e| {
                            Pkcs7Error::BadSignedAttribute {
                                attribute: "message-digest",
                                reason: e.to_string(),
                            }
                        })?;
                        message_digest = Some(v.into_bytes());
                    } else if attr.oid == ATTR_SIGNING_TIME {
                        let v = single()?
                            .to_der()
                            .and_then(|d| x509_cert::time::Time::from_der(&d))
                            .map_err(|e| Pkcs7Error::BadSignedAttribute {
                                attribute: "signing-time",
                                reason: e.to_string(),
                            })?;
                        signing_time = Some(v.to_system_time());
                    }
                }
                match content_type {
                    Some(ct) if ct == self.content_type => {}
                    Some(ct) => {
                        return Err(Pkcs7Error::BadSignedAttribute {
                            attribute: "content-type",
                            reason: format!(
                                "says {ct}, the encapsulated content is {}",
                                self.content_type
                            ),
                        })
                    }
                    None => {
                        return Err(Pkcs7Error::BadSignedAttribute {
                            attribute: "content-type",
                            reason: "absent (RFC 5652 requires it with signed attributes)".into(),
                        })
                    }
                }
                let Some(md) = message_digest else {
                    return Err(Pkcs7Error::BadSignedAttribute {
                        attribute: "message-digest",
                        reason: "absent (RFC 5652 requires it with signed attributes)".into(),
                    });
                };
                let actual = ring::digest::digest(digest_alg, content);
                if actual.as_ref() != md.as_slice() {
                    return Err(Pkcs7Error::DigestMismatch);
                }
                // The signature covers the DER encoding of the attributes as a SET OF.
                attrs
                    .to_der()
                    .map_err(|e| malformed(format!("signed attributes: {e}")))?
            }
        };
        let verifier = signature_algorithm(si, digest_alg, signer_cert)?;
        let key = signer_cert
            .tbs_certificate
            .subject_public_key_info
            .subject_public_key
            .raw_bytes();
        ring::signature::UnparsedPublicKey::new(verifier, key)
            .verify(&signed_bytes, si.signature.as_bytes())
            .map_err(|_| Pkcs7Error::BadSignature {
                subject: subject.clone(),
            })?;
        if let Some(at) = signing_time {
            let validity = &signer_cert.tbs_certificate.validity;
            let not_before = validity.not_before.to_system_time();
            let not_after = validity.not_after.to_system_time();
            if at < not_before || at > not_after {
                return Err(Pkcs7Error::SignedOutsideCertificateValidity {
                    subject,
                    signing_time: unix(at),
                    not_before: unix(not_before),
                    not_after: unix(not_after),
                });
            }
        }
        Ok(SignerCheck { signing_time })
    }
}

pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn attribute_name(oid: &ObjectIdentifier) -> &'static str {
    match *oid {
        ATTR_CONTENT_TYPE => "content-type",
        ATTR_MESSAGE_DIGEST => "message-digest",
        ATTR_SIGNING_TIME => "signing-time",
        _ => "(other)",
    }
}

fn digest_algorithm(
    oid: &ObjectIdentifier,
) -> Result<&'static ring::digest::Algorithm, Pkcs7Error> {
    match *oid {
        SHA256 => Ok(&ring::digest::SHA256),
        SHA384 => Ok(&ring::digest::SHA384),
        SHA512 => Ok(&ring::digest::SHA512),
        SHA1 => Err(Pkcs7Error::UnsupportedAlgorithm {
            what: "digest algorithm",
            found: "SHA-1 (refused: collisions are practical)".into(),
            accepted: "SHA-256, SHA-384, SHA-512",
        }),
        other => Err(Pkcs7Error::UnsupportedAlgorithm {
            what: "digest algorithm",
            found: other.to_string(),
            accepted: "SHA-256, SHA-384, SHA-512",
        }),
    }
}

fn signature_algorithm(
    si: &SignerInfo,
    digest: &'static ring::digest::Algorithm,
    cert: &Certificate,
) -> Result<&'static dyn ring::signature::VerificationAlgorithm, Pkcs7Error> {
    use ring::signature as sig;
    let spki = &cert.tbs_certificate.subject_public_key_info;
    let unsupported = |found: String| Pkcs7Error::UnsupportedAlgorithm {
        what: "signature algorithm",
        found,
        accepted: "RSA PKCS#1 v1.5 (2048-8192 bits) or ECDSA P-256/P-384, with SHA-256/384/512",
    };
    let sig_oid = si.signature_algorithm.oid;
    // The hash the signature itself uses: named by the signature algorithm, or (for plain
    // rsaEncryption, as PKCS#7 signers commonly write) the digest algorithm.
    let hash_name = |d: &'static ring::digest::Algorithm| {
        if d == &ring::digest::SHA256 {
            256
        } else if d == &ring::digest::SHA384 {
            384
        } else {
            512
        }
    };
    if spki.algorithm.oid == RSA_ENCRYPTION {
        let bits = match sig_oid {
            RSA_ENCRYPTION => hash_name(digest),
            SHA256_WITH_RSA => 256,
            SHA384_WITH_RSA => 384,
            SHA512_WITH_RSA => 512,
            other => return Err(unsupported(format!("{other} with an RSA key"))),
        };
        return Ok(match bits {
            256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            _ => &sig::RSA_PKCS1_2048_8192_SHA512,
        });
    }
    if spki.algorithm.oid == EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
        return match (curve, sig_oid) {
            (Some(P256), ECDSA_SHA256) => Ok(&sig::ECDSA_P256_SHA256_ASN1),
            (Some(P256), ECDSA_SHA384) => Ok(&sig::ECDSA_P256_SHA384_ASN1),
            (Some(P384), ECDSA_SHA256) => Ok(&sig::ECDSA_P384_SHA256_ASN1),
            (Some(P384), ECDSA_SHA384) => Ok(&sig::ECDSA_P384_SHA384_ASN1),
            (curve, s) => Err(unsupported(format!(
                "{s} with an EC key on curve {curve:?}"
            ))),
        };
    }
    Err(unsupported(format!("key algorithm {}", spki.algorithm.oid)))
}

/// Parses one certificate from PEM (or DER).
pub(crate) fn certificate_from_pem_or_der(input: &[u8]) -> Result<Certificate, String> {
    let der = match pem::parse(input) {
        Ok(p) if p.tag() == "CERTIFICATE" => p.into_contents(),
        Ok(p) => return Err(format!("PEM block is {:?}, not CERTIFICATE", p.tag())),
        Err(_) => input.to_vec(),
    };
    Certificate::from_der(&der).map_err(|e| format!("not an X.509 certificate: {e}"))
}
