//! What transit says about a key, checked the way the PKCS#11 attribute checks are: a key
//! that is or can become exportable, that can be backed up in plaintext, that was imported
//! (its private half existed outside), that was rotated (more than one version), or that is
//! not a P-256 / RSA-3072 signing key is refused by name. And the signatures transit returns,
//! converted to what [`crate::KeyManager::sign_digest`] promises and verified against the
//! public key before anyone gets them.

use std::collections::BTreeMap;

use base64::Engine as _;
use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
use p256::pkcs8::DecodePublicKey as _;
use rsa::traits::PublicKeyParts as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::SubjectPublicKeyInfoDer;
use serde::Deserialize;

use crate::encoding::RSA_BITS;
use crate::{HsmError, KeyAlgorithm, KeyInfo};

/// The only key version the key manager signs with: ironroot rotates by making new keys, so a
/// second version means someone rotated the key inside transit.
pub(super) const KEY_VERSION: u64 = 1;

/// `data` of `GET <mount>/keys/<name>` (the fields the checks read).
#[derive(Deserialize)]
pub(super) struct KeyData {
    #[serde(rename = "type")]
    key_type: Option<String>,
    exportable: Option<bool>,
    allow_plaintext_backup: Option<bool>,
    #[serde(default)]
    imported_key: bool,
    latest_version: Option<u64>,
    #[serde(default)]
    keys: BTreeMap<String, serde_json::Value>,
}

/// The transit `type` for an algorithm.
pub(super) fn transit_type(alg: KeyAlgorithm) -> &'static str {
    match alg {
        KeyAlgorithm::EcP256 => "ecdsa-p256",
        KeyAlgorithm::Rsa3072 => "rsa-3072",
    }
}

/// A key found and checked: its description and its public key for verifying signatures.
#[derive(Clone)]
pub(super) struct Checked {
    pub(super) info: KeyInfo,
    pub(super) verifier: Verifier,
}

#[derive(Clone)]
pub(super) enum Verifier {
    Ec(p256::ecdsa::VerifyingKey),
    Rsa(Box<rsa::RsaPublicKey>),
}

/// Checks `data` for `label` (transit name `name`); fails closed.
pub(super) fn check(label: &str, name: &str, data: KeyData) -> Result<Checked, HsmError> {
    let extractable = |reason: String| HsmError::KeyExtractable {
        label: label.to_owned(),
        reason: format!("transit key '{name}': {reason}"),
    };
    let unsupported = |reason: String| HsmError::UnsupportedKey {
        label: label.to_owned(),
        reason: format!("transit key '{name}': {reason}"),
    };
    match data.exportable {
        Some(false) => {}
        Some(true) => return Err(extractable("exportable=true".into())),
        None => {
            return Err(extractable(
                "transit did not say whether it is exportable".into(),
            ))
        }
    }
    match data.allow_plaintext_backup {
        Some(false) => {}
        Some(true) => return Err(extractable("allow_plaintext_backup=true".into())),
        None => {
            return Err(extractable(
                "transit did not say whether plaintext backup is allowed".into(),
            ))
        }
    }
    if data.imported_key {
        return Err(extractable(
            "imported_key=true (its private key existed outside transit)".into(),
        ));
    }
    let algorithm = match data.key_type.as_deref() {
        Some("ecdsa-p256") => KeyAlgorithm::EcP256,
        Some("rsa-3072") => KeyAlgorithm::Rsa3072,
        other => {
            return Err(unsupported(format!(
                "type {other:?}, ironroot uses \"ecdsa-p256\" or \"rsa-3072\""
            )))
        }
    };
    if data.latest_version != Some(KEY_VERSION) || data.keys.len() != 1 {
        return Err(unsupported(format!(
            "it has {} version(s) (latest {:?}): it was rotated inside transit; ironroot \
             rotates by creating new keys and signs only with version {KEY_VERSION}",
            data.keys.len(),
            data.latest_version
        )));
    }
    let pem = data
        .keys
        .get(&KEY_VERSION.to_string())
        .and_then(|v| v.get("public_key"))
        .and_then(|v| v.as_str())
        .ok_or_else(|| unsupported("no public_key for version 1".into()))?;
    let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| unsupported(format!("public_key is not a PEM PUBLIC KEY: {e}")))?;
    let der = spki.as_ref().to_vec();
    let verifier = match algorithm {
        KeyAlgorithm::EcP256 => Verifier::Ec(
            p256::ecdsa::VerifyingKey::from_public_key_der(&der)
                .map_err(|e| unsupported(format!("public_key is not P-256: {e}")))?,
        ),
        KeyAlgorithm::Rsa3072 => {
            let pk = rsa::RsaPublicKey::from_public_key_der(&der)
                .map_err(|e| unsupported(format!("public_key is not RSA: {e}")))?;
            if pk.n().bits() != RSA_BITS || pk.e() != &rsa::BigUint::from(65537u32) {
                return Err(unsupported(format!(
                    "RSA key of {} bits with e={}: ironroot needs 3072 bits, e=65537",
                    pk.n().bits(),
                    pk.e()
                )));
            }
            Verifier::Rsa(Box::new(pk))
        }
    };
    Ok(Checked {
        info: KeyInfo {
            label: label.to_owned(),
            algorithm,
            public_key_der: der,
        },
        verifier,
    })
}

/// Turns transit's `vault:v1:<base64>` into the trait's form (EC: raw r||s; RSA: as is) and
/// verifies it over `digest`. `None` when it does not verify or does not parse as a signature
/// of version 1; the caller names the error.
pub(super) fn signature(key: &Checked, digest: &[u8], answer: &str) -> Option<Vec<u8>> {
    let b64 = answer.strip_prefix("vault:v1:")?;
    let sig = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    match &key.verifier {
        Verifier::Ec(vk) => {
            let sig = p256::ecdsa::Signature::from_der(&sig).ok()?;
            vk.verify_prehash(digest, &sig).ok()?;
            Some(sig.to_bytes().to_vec())
        }
        Verifier::Rsa(pk) => {
            pk.verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest, &sig)
                .ok()?;
            Some(sig)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    fn data(pem: &str, f: impl FnOnce(&mut serde_json::Value)) -> KeyData {
        let mut v = serde_json::json!({
            "type": "ecdsa-p256", "exportable": false, "allow_plaintext_backup": false,
            "imported_key": false, "latest_version": 1,
            "keys": {"1": {"public_key": pem}},
        });
        f(&mut v);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn checks_fail_closed_and_signatures_are_verified() {
        use p256::ecdsa::signature::hazmat::PrehashSigner as _;
        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        let ok = check("l", "n", data(&pem, |_| {})).unwrap();
        assert_eq!(ok.info.algorithm, KeyAlgorithm::EcP256);

        for (field, value) in [
            ("exportable", serde_json::json!(true)),
            ("exportable", serde_json::Value::Null),
            ("allow_plaintext_backup", serde_json::json!(true)),
            ("imported_key", serde_json::json!(true)),
        ] {
            let e = check("l", "n", data(&pem, |v| v[field] = value.clone()));
            assert!(
                matches!(e, Err(HsmError::KeyExtractable { .. })),
                "{field}={value}"
            );
        }
        let e = check("l", "n", data(&pem, |v| v["type"] = "aes256-gcm96".into()));
        assert!(matches!(e, Err(HsmError::UnsupportedKey { .. })));
        let e = check("l", "n", data(&pem, |v| v["latest_version"] = 2.into()));
        assert!(matches!(e, Err(HsmError::UnsupportedKey { .. })));

        let digest = [9u8; 32];
        let sig: p256::ecdsa::Signature = sk.sign_prehash(&digest).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes());
        let raw = signature(&ok, &digest, &format!("vault:v1:{b64}")).unwrap();
        assert_eq!(raw, sig.to_bytes().to_vec());
        assert!(signature(&ok, &[8u8; 32], &format!("vault:v1:{b64}")).is_none());
        assert!(signature(&ok, &digest, &format!("vault:v2:{b64}")).is_none());
    }
}
