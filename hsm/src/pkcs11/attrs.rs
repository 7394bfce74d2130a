//! Key templates, lookups, and the checks that make a token key safe to use.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use sha2::{Digest, Sha256};

use crate::encoding::{
    ec_spki_from_point, key_id, p256_ec_params, rsa_spki, sha256_digest_info, unwrap_ec_point,
    RSA_BITS,
};
use crate::pkcs11::pool::{ck, OpError};
use crate::{HsmError, KeyAlgorithm, KeyInfo};

/// e = 65537, big-endian.
const RSA_EXPONENT: [u8; 3] = [0x01, 0x00, 0x01];

/// Mechanism and (public, private) templates for a new key pair.
///
/// The private key is a token object (survives restarts), private (needs login to see),
/// sensitive and not extractable (no C_GetAttributeValue or C_WrapKey can get it out), and
/// usable only for signing: a CA key that can also decrypt or derive is an oracle for
/// whoever reaches the token.
pub(crate) fn keypair_templates(
    label: &str,
    algorithm: KeyAlgorithm,
) -> Result<(Mechanism<'static>, Vec<Attribute>, Vec<Attribute>), HsmError> {
    let id = key_id(label);
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        // Modules default these to true (SoftHSM does); spell out "sign only".
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let mechanism = match algorithm {
        KeyAlgorithm::EcP256 => {
            public.push(Attribute::EcParams(p256_ec_params()?));
            Mechanism::EccKeyPairGen
        }
        KeyAlgorithm::Rsa3072 => {
            public.push(Attribute::ModulusBits((RSA_BITS as u64).into()));
            public.push(Attribute::PublicExponent(RSA_EXPONENT.to_vec()));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    Ok((mechanism, public, private))
}

/// Every key object (private or public) that uses `label` or the id derived from it.
pub(crate) fn key_objects(session: &Session, label: &str) -> Result<Vec<ObjectHandle>, OpError> {
    let mut found = Vec::new();
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for attr in [
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(key_id(label)),
        ] {
            for h in session
                .find_objects(&[Attribute::Class(class), attr])
                .map_err(ck(format!("search for key objects '{label}'")))?
            {
                if !found.contains(&h) {
                    found.push(h);
                }
            }
        }
    }
    Ok(found)
}

/// The private key for `label`: found by CKA_LABEL, or else by the CKA_ID derived from it (in
/// case an operator relabelled the key with a vendor tool). More than one match is an error:
/// picking one would be a guess about which key signs the certificates.
pub(crate) fn find_private(
    session: &Session,
    label: &str,
) -> Result<Option<ObjectHandle>, OpError> {
    let op = || format!("search for private key '{label}'");
    let mut handles = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(ck(op()))?;
    if handles.is_empty() {
        handles = session
            .find_objects(&[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(key_id(label)),
            ])
            .map_err(ck(op()))?;
    }
    match handles.len() {
        0 => Ok(None),
        1 => Ok(handles.pop()),
        count => Err(HsmError::KeyAmbiguous {
            label: label.to_owned(),
            count,
        }
        .into()),
    }
}

/// What we read from a private key object.
#[derive(Default)]
struct PrivateAttrs {
    key_type: Option<KeyType>,
    sensitive: Option<bool>,
    extractable: Option<bool>,
    never_extractable: Option<bool>,
    always_sensitive: Option<bool>,
    sign: Option<bool>,
    id: Option<Vec<u8>>,
    ec_params: Option<Vec<u8>>,
    modulus: Option<Vec<u8>>,
    public_exponent: Option<Vec<u8>>,
}

fn read_private(
    session: &Session,
    label: &str,
    handle: ObjectHandle,
) -> Result<PrivateAttrs, OpError> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::NeverExtractable,
                AttributeType::AlwaysSensitive,
                AttributeType::Sign,
                AttributeType::Id,
                AttributeType::EcParams,
                AttributeType::Modulus,
                AttributeType::PublicExponent,
            ],
        )
        .map_err(ck(format!("read attributes of private key '{label}'")))?;
    let mut out = PrivateAttrs::default();
    for a in attrs {
        match a {
            Attribute::KeyType(t) => out.key_type = Some(t),
            Attribute::Sensitive(b) => out.sensitive = Some(b),
            Attribute::Extractable(b) => out.extractable = Some(b),
            Attribute::NeverExtractable(b) => out.never_extractable = Some(b),
            Attribute::AlwaysSensitive(b) => out.always_sensitive = Some(b),
            Attribute::Sign(b) => out.sign = Some(b),
            Attribute::Id(v) => out.id = Some(v),
            Attribute::EcParams(v) => out.ec_params = Some(v),
            Attribute::Modulus(v) => out.modulus = Some(v),
            Attribute::PublicExponent(v) => out.public_exponent = Some(v),
            _ => {}
        }
    }
    Ok(out)
}

/// Fails closed unless the token says the private key is sensitive and never was, nor ever
/// will be, extractable. A missing attribute counts as a failure: "not reported" is not
/// "safe".
fn check_not_extractable(label: &str, a: &PrivateAttrs) -> Result<(), HsmError> {
    let mut problems = Vec::new();
    let mut require = |name: &str, value: Option<bool>, wanted: bool| match value {
        Some(v) if v == wanted => {}
        Some(v) => problems.push(format!("{name} is {v}")),
        None => problems.push(format!("{name} is not reported")),
    };
    require("CKA_SENSITIVE", a.sensitive, true);
    require("CKA_EXTRACTABLE", a.extractable, false);
    require("CKA_NEVER_EXTRACTABLE", a.never_extractable, true);
    require("CKA_ALWAYS_SENSITIVE", a.always_sensitive, true);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(HsmError::KeyExtractable {
            label: label.to_owned(),
            reason: problems.join(", "),
        })
    }
}

fn unsupported(label: &str, reason: impl Into<String>) -> OpError {
    HsmError::UnsupportedKey {
        label: label.to_owned(),
        reason: reason.into(),
    }
    .into()
}

/// Checks the private key at `handle` and returns its public description.
///
/// Besides the extractability checks, the key must be a signing key of a supported type, and
/// one signature made with it must verify under the public key we are about to hand out: a
/// public key object that does not belong to the private key would otherwise go into
/// certificates that nobody can verify.
pub(crate) fn inspect(
    session: &Session,
    label: &str,
    handle: ObjectHandle,
) -> Result<KeyInfo, OpError> {
    let a = read_private(session, label, handle)?;
    check_not_extractable(label, &a)?;
    if a.sign != Some(true) {
        return Err(unsupported(label, "CKA_SIGN is not true"));
    }
    let (algorithm, public_key_der) = match a.key_type {
        Some(KeyType::EC) => {
            if a.ec_params.as_deref() != Some(p256_ec_params()?.as_slice()) {
                return Err(unsupported(
                    label,
                    "it is an EC key on a curve other than P-256",
                ));
            }
            let point = ec_public_point(session, label, a.id.as_deref())?;
            (KeyAlgorithm::EcP256, ec_spki_from_point(&point)?)
        }
        Some(KeyType::RSA) => {
            // The private object carries the public modulus and exponent (they are not
            // sensitive), so RSA keys do not depend on the public object still existing.
            let (Some(n), Some(e)) = (a.modulus.as_deref(), a.public_exponent.as_deref()) else {
                return Err(unsupported(
                    label,
                    "RSA modulus or exponent is not readable",
                ));
            };
            let bits = rsa::BigUint::from_bytes_be(n).bits();
            if bits != RSA_BITS {
                return Err(unsupported(
                    label,
                    format!("it is RSA-{bits}, not RSA-3072"),
                ));
            }
            (KeyAlgorithm::Rsa3072, rsa_spki(n, e)?)
        }
        Some(other) => {
            return Err(unsupported(
                label,
                format!("key type {other} is not supported"),
            ))
        }
        None => return Err(unsupported(label, "CKA_KEY_TYPE is not reported")),
    };
    let info = KeyInfo {
        label: label.to_owned(),
        algorithm,
        public_key_der,
    };
    check_pair(session, &info, handle)?;
    Ok(info)
}

/// CKA_EC_POINT of the public key object paired with the private key (same CKA_ID, or the
/// same label when the private key has no id).
fn ec_public_point(session: &Session, label: &str, id: Option<&[u8]>) -> Result<Vec<u8>, OpError> {
    let by = match id {
        Some(id) if !id.is_empty() => Attribute::Id(id.to_vec()),
        _ => Attribute::Label(label.as_bytes().to_vec()),
    };
    let handles = session
        .find_objects(&[Attribute::Class(ObjectClass::PUBLIC_KEY), by])
        .map_err(ck(format!("search for public key '{label}'")))?;
    let handle = match handles.as_slice() {
        [h] => *h,
        [] => {
            return Err(unsupported(
                label,
                "its public key object is missing from the token",
            ))
        }
        more => {
            return Err(unsupported(
                label,
                format!("{} public key objects share its CKA_ID", more.len()),
            ))
        }
    };
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(ck(format!("read public key '{label}'")))?;
    for a in attrs {
        if let Attribute::EcPoint(v) = a {
            return Ok(unwrap_ec_point(&v)?);
        }
    }
    Err(unsupported(
        label,
        "its public key object has no CKA_EC_POINT",
    ))
}

/// Signs a label-specific digest in the token and verifies it in software.
fn check_pair(session: &Session, info: &KeyInfo, handle: ObjectHandle) -> Result<(), OpError> {
    let digest = Sha256::digest(format!("ironroot key pair check: {}", info.label));
    let sig = sign_with(session, &info.label, info.algorithm, handle, &digest)?;
    let verified = match info.algorithm {
        KeyAlgorithm::EcP256 => {
            use p256::pkcs8::DecodePublicKey as _;
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&info.public_key_der);
            let sig = p256::ecdsa::Signature::from_slice(&sig);
            matches!((key, sig), (Ok(k), Ok(s)) if k.verify_prehash(&digest, &s).is_ok())
        }
        KeyAlgorithm::Rsa3072 => {
            use rsa::pkcs8::DecodePublicKey as _;
            rsa::RsaPublicKey::from_public_key_der(&info.public_key_der).is_ok_and(|k| {
                k.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &digest, &sig)
                    .is_ok()
            })
        }
    };
    if verified {
        Ok(())
    } else {
        Err(unsupported(
            &info.label,
            "a test signature does not verify under its public key: the public key object does not belong to the private key",
        ))
    }
}

/// One C_Sign of a SHA-256 digest: CKM_ECDSA (raw r||s) or CKM_RSA_PKCS over the DigestInfo.
pub(crate) fn sign_with(
    session: &Session,
    label: &str,
    algorithm: KeyAlgorithm,
    handle: ObjectHandle,
    digest: &[u8],
) -> Result<Vec<u8>, OpError> {
    let op = || format!("sign with key '{label}'");
    match algorithm {
        KeyAlgorithm::EcP256 => {
            let sig = session
                .sign(&Mechanism::Ecdsa, handle, digest)
                .map_err(ck(op()))?;
            if sig.len() != 64 {
                return Err(HsmError::Encoding {
                    what: "ECDSA signature",
                    reason: format!(
                        "the token returned {} bytes instead of 64 (r||s)",
                        sig.len()
                    ),
                }
                .into());
            }
            Ok(sig)
        }
        KeyAlgorithm::Rsa3072 => {
            let info = sha256_digest_info(digest)?;
            session
                .sign(&Mechanism::RsaPkcs, handle, &info)
                .map_err(ck(op()))
        }
    }
}
