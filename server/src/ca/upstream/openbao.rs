//! OpenBao's (or Vault's) PKI engine as the upstream CA (`[upstream] kind = "openbao"`): each
//! new CA key makes a CSR, signed by that key inside the key manager, which the server posts
//! to `<mount>/root/sign-intermediate` (or `<mount>/issuer/<issuer>/sign-intermediate`). The
//! answer is checked ([`super::validate`]) before the key is used. The connection, TLS rules
//! and token/AppRole handling are the transit key manager's ([`OpenBaoClient`]).

use ironroot_hsm::OpenBaoClient;
use rcgen::{DnType, DnValue, PublicKeyData};
use serde::Deserialize;
use serde_json::json;

use super::super::signing_key::HsmKey;
use super::super::x509::{self, CaSubject};
use super::super::{CaError, CertificateError, IntermediateRefused, UpstreamError};
use super::{validate, Certified};

/// The PKI mount that signs this server's CA certificates.
pub(crate) struct OpenBaoPki {
    client: OpenBaoClient,
    mount: String,
    issuer: Option<String>,
}

/// What `sign-intermediate` answers (PEM, `format = "pem"`).
#[derive(Deserialize)]
struct Signed {
    certificate: String,
    #[serde(default)]
    issuing_ca: String,
    #[serde(default)]
    ca_chain: Vec<String>,
}

impl OpenBaoPki {
    /// The mount `mount` reached through `client`; `issuer`: the issuer reference to sign
    /// with (`None`: the mount's default issuer).
    pub(crate) fn new(client: OpenBaoClient, mount: String, issuer: Option<String>) -> Self {
        OpenBaoPki {
            client,
            mount,
            issuer,
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
        let signed: Signed = serde_json::from_value(data).map_err(|e| {
            refused(IntermediateRefused::Unparseable {
                what: "the answer".into(),
                reason: e.to_string(),
            })
        })?;
        let cert = pem_certificates(&signed.certificate, "the certificate")
            .map_err(refused)?
            .into_iter()
            .next()
            .unwrap_or_default();
        let chain_pems = if signed.ca_chain.is_empty() {
            vec![signed.issuing_ca]
        } else {
            signed.ca_chain
        };
        let mut chain = Vec::new();
        for (i, pem) in chain_pems.iter().enumerate() {
            chain.extend(pem_certificates(pem, &format!("ca_chain entry {i}")).map_err(refused)?);
        }
        let mut certified = validate::check_intermediate(
            &cert,
            &chain,
            key.der_bytes(),
            &subject.trust_domain,
            now,
        )
        .map_err(refused)?;
        // Never longer than asked: the rotation schedule counts on ca_ttl.
        certified.not_after = certified.not_after.min(now + ttl_secs);
        Ok(certified)
    }
}

fn pem_certificates(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, IntermediateRefused> {
    ironroot_api::bundle::certificates_from_pem(pem.as_bytes()).map_err(|e| {
        IntermediateRefused::Unparseable {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    })
}
