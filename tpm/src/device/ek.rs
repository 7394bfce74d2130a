//! The endorsement key and its certificate.

use tss_esapi::abstraction::ek::create_ek_object_2;
use tss_esapi::abstraction::{AsymmetricAlgorithmSelection, DefaultKey};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::Public;

use super::keys::{tpm2b_public, KeySlot};
use super::{DeviceError, EkAlgorithm, EndorsementKey, Tpm};

impl EkAlgorithm {
    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            EkAlgorithm::Rsa2048 => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            EkAlgorithm::EccP256 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP256),
            EkAlgorithm::EccP384 => AsymmetricAlgorithmSelection::Ecc(EccCurve::NistP384),
        }
    }

    /// Where provisioning tools persist this EK: TCG Provisioning Guidance for RSA-2048
    /// and P-256; swtpm_setup's choice for P-384 (there is no TCG handle for it).
    fn persistent_handles(self) -> &'static [u32] {
        match self {
            EkAlgorithm::Rsa2048 => &[0x8101_0001],
            EkAlgorithm::EccP256 => &[0x8101_0002],
            EkAlgorithm::EccP384 => &[0x8101_0016],
        }
    }

    /// NV indices of the EK certificate, preferred first (TCG EK Credential Profile 2.5,
    /// 2.2.1.4-5). A P-384 certificate is sometimes found at the P-256 index.
    fn certificate_indices(self) -> &'static [u32] {
        match self {
            EkAlgorithm::Rsa2048 => &[0x01c0_0002],
            EkAlgorithm::EccP256 => &[0x01c0_000a],
            EkAlgorithm::EccP384 => &[0x01c0_0016, 0x01c0_000a],
        }
    }

    /// Whether `public` is an EK of this algorithm (a restricted decryption key of the
    /// right type and size), so a persisted key of another kind is never taken for it.
    fn matches(self, public: &Public) -> bool {
        let attrs = public.object_attributes();
        if !(attrs.restricted() && attrs.decrypt() && attrs.fixed_tpm()) {
            return false;
        }
        match (self, public) {
            (EkAlgorithm::Rsa2048, Public::Rsa { parameters, .. }) => {
                parameters.key_bits() == RsaKeyBits::Rsa2048
            }
            (EkAlgorithm::EccP256, Public::Ecc { parameters, .. }) => {
                parameters.ecc_curve() == EccCurve::NistP256
            }
            (EkAlgorithm::EccP384, Public::Ecc { parameters, .. }) => {
                parameters.ecc_curve() == EccCurve::NistP384
            }
            _ => false,
        }
    }
}

impl Tpm {
    /// The endorsement key made from the TCG template for `alg`, and its certificate from
    /// NV (`None` when the TPM has none). A key already persisted at the usual handle is
    /// used when it is of the right kind; otherwise the EK is re-created from the template
    /// (deterministic: the same key every time) and kept as a saved context.
    pub fn endorsement_key(&mut self, alg: EkAlgorithm) -> Result<EndorsementKey, DeviceError> {
        if let Some(ek) = self.eks.iter().find(|k| k.alg == alg) {
            return Ok(ek.clone());
        }
        let mut found = None;
        for &h in alg.persistent_handles() {
            if self.handle_exists(h)? {
                let slot = KeySlot::Persistent(h);
                let (public, _, qn) = self.read_public(&slot)?;
                if alg.matches(&public) {
                    found = Some((slot, public, qn));
                    break;
                }
            }
        }
        let (slot, public, qualified_name) = match found {
            Some(f) => f,
            None => {
                let handle = create_ek_object_2(&mut self.ctx, alg.selection(), DefaultKey)
                    .map_err(DeviceError::tpm("CreatePrimary (EK)"))?;
                let (public, _, qn, slot) = self.describe_and_save(handle)?;
                (slot, public, qn)
            }
        };
        let public_bytes = tpm2b_public(&public)?;
        let certificate = self.ek_certificate(alg, &public)?;
        let ek = EndorsementKey {
            public: public_bytes,
            certificate,
            alg,
            slot,
            qualified_name: qualified_name.value().to_vec(),
        };
        self.eks.push(ek.clone());
        Ok(ek)
    }

    /// The first certificate among `alg`'s NV indices whose key is `public`; failing that
    /// the first one present (the verifier then reports the mismatch), else `None`.
    fn ek_certificate(
        &mut self,
        alg: EkAlgorithm,
        public: &Public,
    ) -> Result<Option<Vec<u8>>, DeviceError> {
        let key = public_key_bytes(public);
        let mut first = None;
        for &index in alg.certificate_indices() {
            let Some(raw) = self.read_nv(index)? else {
                continue;
            };
            let cert = trim_der(raw);
            if contains(&cert, &key) {
                return Ok(Some(cert));
            }
            first.get_or_insert(cert);
        }
        Ok(first)
    }
}

/// The raw key bytes that appear verbatim in a certificate's SubjectPublicKeyInfo: the RSA
/// modulus, or the EC point's x||y.
fn public_key_bytes(public: &Public) -> Vec<u8> {
    match public {
        Public::Rsa { unique, .. } => unique.value().to_vec(),
        Public::Ecc { unique, .. } => [unique.x().value(), unique.y().value()].concat(),
        _ => Vec::new(),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Cuts a DER certificate to the length its outer SEQUENCE declares: some TPMs store it
/// zero-padded to the NV index size. Anything not shaped like DER is returned as is.
pub(crate) fn trim_der(mut bytes: Vec<u8>) -> Vec<u8> {
    let (Some(&0x30), Some(&l0)) = (bytes.first(), bytes.get(1)) else {
        return bytes;
    };
    let (header, len) = match l0 {
        0..=0x7f => (2, usize::from(l0)),
        0x81..=0x84 => {
            let n = usize::from(l0 & 0x7f);
            let Some(len_bytes) = bytes.get(2..2 + n) else {
                return bytes;
            };
            (
                2 + n,
                len_bytes
                    .iter()
                    .fold(0usize, |a, &b| (a << 8) | usize::from(b)),
            )
        }
        _ => return bytes,
    };
    if let Some(total) = header.checked_add(len) {
        if total <= bytes.len() {
            bytes.truncate(total);
        }
    }
    bytes
}

#[cfg(test)]
mod tests;
