//! OpenBao's (or Vault's) PKI engine as the upstream CA (`[upstream] kind = "openbao"`): each
//! new CA key makes a CSR, signed by that key inside the key manager, which the server posts
//! to `<mount>/root/sign-intermediate` (or `<mount>/issuer/<issuer>/sign-intermediate`). The
//! answer is checked ([`super::validate`]) before the key is used. The connection, TLS rules
//! and token/AppRole handling are the transit key manager's ([`OpenBaoClient`]).

use ironroot_hsm::OpenBaoClient;
use rcgen::{DnType, DnValue, PublicKeyData};
use serde_json::json;

use super::super::signing_key::HsmKey;
use super::super::x509::{self, CaSubject};
use super::super::{CaError, CertificateError, UpstreamError};
use super::{validate, Certified};

/// The PKI mount that signs this server's CA certificates.
pub(crate) struct OpenBaoPki {
    client: OpenBaoClient,
    mount: String,
    issuer: Option<String>,
    /// `[upstream] root_file`'s roots (DER); empty: any root the chain verifies to.
    pinned_roots: Vec<Vec<u8>>,
}

impl OpenBaoPki {
    /// The mount `mount` reached through `client`; `issuer`: the issuer reference to sign
    /// with (`None`: the mount's default issuer); `pinned_roots`: the only roots an answer
    /// may chain to (empty: any).
    pub(crate) fn new(
        client: OpenBaoClient,
        mount: String,
        issuer: Option<String>,
        pinned_roots: Vec<Vec<u8>>,
    ) -> Self {
        OpenBaoPki {
            client,
            mount,
            issuer,
            pinned_roots,
        }
    }

    /// The API path that signs an intermediate.
    pub(crate) fn sign_path(&self) -> String {
        match &self.issuer {
            Some(i) => format!("{}/issuer/{i}/sign-intermediate", self.mount),
            None => format!("{}/root/sign-intermediate", self.mount),
        }
    }

    pub(super) fn describe(&self) -> String {
        match &self.issuer {
            Some(i) => format!(
                "OpenBao PKI mount '{}' (issuer '{i}') at {}",
                self.mount,
                self.client.address()
            ),
            None => format!(
                "OpenBao PKI mount '{}' at {}",
                self.mount,
                self.client.address()
            ),
        }
    }

    pub(super) fn certify(
        &self,
        key: &HsmKey,
        subject: &CaSubject,
        now: i64,
        ttl_secs: i64,
    ) -> Result<Certified, CaError> {
        // The CSR carries our subject, URI SAN and CA extensions; validity is OpenBao's.
        let mut params = x509::ca_params(subject, now - x509::BACKDATE_SECS, now + ttl_secs)?;
        // OpenBao picks the serial and the authority key identifier (a CSR carries neither).
        params.serial_number = None;
        params.use_authority_key_identifier_extension = false;
        let common_name = match params.distinguished_name.get(&DnType::CommonName) {
            Some(DnValue::Utf8String(s)) => s.clone(),
            _ => format!("ironroot CA {}", subject.trust_domain),
        };
        let csr = params.serialize_request(key).map_err(|e| key.explain(e))?;
        let csr_pem = csr.pem().map_err(CertificateError::Build)?;
        let body = json!({
            "csr": csr_pem,
            "common_name": common_name,
            "use_csr_values": true,
            "uri_sans": format!("spiffe://{}", subject.trust_domain),
            "exclude_cn_from_sans": true,
            "ttl": format!("{ttl_secs}s"),
            "format": "pem",
        });
        let path = self.sign_path();
        let data = self
            .client
            .write(&path, "sign this server's CA certificate", &body)
            .map_err(|source| UpstreamError::OpenBao {
                mount: self.mount.clone(),
                path: path.clone(),
                source: Box::new(source),
            })?;
        let refused = |reason| UpstreamError::OpenBaoAnswer {
            mount: self.mount.clone(),
            reason,
        };
        let mut certified =
            validate::check_answer(data, key.der_bytes(), &subject.trust_domain, now)
                .map_err(refused)?;
        validate::check_pinned_root(&certified, &self.pinned_roots).map_err(refused)?;
        // Never longer than asked: the rotation schedule counts on ca_ttl.
        certified.not_after = certified.not_after.min(now + ttl_secs);
        Ok(certified)
    }
}
