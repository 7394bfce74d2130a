//! The certificate authority: X.509 and JWT keys in the key manager (HSM),
//! SVID signing, the trust bundle, and key rotation.

pub mod devid_ca;
mod error;
mod health;
pub(crate) mod journal;
pub(crate) mod jwt;
mod memory;
mod rotation;
pub mod signing_key;
mod stored_journal;
pub(crate) mod upstream;
pub mod x509;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ironroot_api::bundle::{JwtAuthority, TrustBundle};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_hsm::{KeyAlgorithm, KeyManager, Signer};
use ironroot_runtime::unix_now;
use rcgen::{Issuer, PublicKeyData};

use crate::store::DataStore;
use journal::CaJournal;
use signing_key::HsmKey;
use upstream::Upstream;
use x509::CaSubject;

pub use error::{
    CaError, CertificateError, IntermediateRefused, JournalError, KeyError, SigningError,
    UpstreamError,
};
pub use health::{CaHealth, HealthState};

/// Where X.509-SVIDs are signed (`[ca] signing`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningMode {
    /// Every X.509-SVID is signed by the CA key inside the HSM (`"hsm"`, the default): no key
    /// that can issue an SVID ever exists outside the token.
    #[default]
    Hsm,
    /// X.509-SVIDs are signed by a P-256 key kept only in the server's memory, certified by
    /// the HSM's CA key as an intermediate (pathLen 0) for `memory_key_ttl` and replaced at
    /// half of it (`"memory"`): the HSM signs one certificate per replacement instead of one
    /// per SVID, and SVIDs can still be signed while the HSM is away, until the intermediate
    /// expires. JWT-SVIDs stay signed in the HSM.
    Memory,
}

impl SigningMode {
    /// The configuration spelling: `"hsm"` or `"memory"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SigningMode::Hsm => "hsm",
            SigningMode::Memory => "memory",
        }
    }
}

/// What the CA is configured to do.
#[derive(Debug, Clone)]
pub struct CaSettings {
    /// The trust domain the CA signs for: SVIDs must name an ID in it.
    pub trust_domain: TrustDomain,
    /// Algorithm of the X.509 CA keys it generates (JWT keys are always P-256).
    pub key_algorithm: KeyAlgorithm,
    /// Lifetime of each CA certificate and JWT key (rotation replaces them before they
    /// expire); bundles hint a refresh every tenth of it (at least 5 s).
    pub ca_ttl: Duration,
    /// X.509-SVID lifetime when a request asks for 0 seconds.
    pub default_x509_svid_ttl: Duration,
    /// JWT-SVID lifetime when a request asks for 0 seconds.
    pub default_jwt_svid_ttl: Duration,
    /// Start of the label of every key the CA generates
    /// (`<prefix>-x509-<unix time>-<random hex>`), so keys of several servers can share a
    /// token.
    pub key_label_prefix: String,
    /// O= of the CA certificate's subject.
    pub organization: String,
    /// C= of the CA certificate's subject (two letters).
    pub country: String,
    /// `iss` claim of JWT-SVIDs; `None` leaves it out.
    pub jwt_issuer: Option<String>,
    /// Where X.509-SVIDs are signed.
    pub signing: SigningMode,
    /// Lifetime of each in-memory signing key's certificate ([`SigningMode::Memory`]; never
    /// beyond the CA certificate that certifies it). It is replaced at half of it.
    pub memory_key_ttl: Duration,
}

/// An issued X.509-SVID: the leaf first, then intermediates (no root).
#[derive(Debug, Clone)]
pub struct IssuedX509Svid {
    pub(crate) chain: Vec<Vec<u8>>,
    pub(crate) expires_at: i64,
}

/// Public facts about the CA for health checks and logs.
#[derive(Debug, Clone)]
pub struct CaStatus {
    pub(crate) key_manager: String,
    /// Label of the key that signs X.509-SVIDs now (it changes at each rotation).
    pub x509_key_label: String,
    pub(crate) x509_not_after: i64,
    pub(crate) jwt_key_id: String,
    pub(crate) upstream: Option<String>,
}

struct ActiveX509 {
    issuer: Issuer<'static, HsmKey>,
    /// Our CA certificate followed by the upstream chain (empty for a root CA).
    chain_after_leaf: Vec<Vec<u8>>,
    not_after: i64,
    key_label: String,
}

struct ActiveJwt {
    signer: Signer,
    key_id: String,
    not_after: i64,
}

struct CaState {
    journal: CaJournal,
    x509: Option<Arc<ActiveX509>>,
    jwt: Option<Arc<ActiveJwt>>,
    /// The in-memory signing key and its certificate ([`SigningMode::Memory`]).
    memory: Option<Arc<memory::MemoryIssuer>>,
}

/// The trust domain's CA: signs X.509- and JWT-SVIDs with keys that never leave the key
/// manager, publishes the trust bundle, and rotates its keys on a schedule kept in the
/// store (so a restart resumes the same keys).
///
/// Shared behind an `Arc` by the admin and node APIs; every method takes `&self`. Methods
/// fail with [`CaError::NotReady`] until a key of the kind asked for is active.
pub struct CertificateAuthority {
    settings: CaSettings,
    km: Arc<dyn KeyManager>,
    store: Arc<dyn DataStore>,
    upstream: Option<Upstream>,
    state: RwLock<CaState>,
    /// Serialises rotations (the HSM work happens outside the state lock), with the keys
    /// made for journal writes of unknown outcome.
    rotation: Mutex<stored_journal::UnsettledKeys>,
    /// Set while rotation checks fail (for the health check).
    rotation_trouble: Mutex<Option<health::RotationTrouble>>,
    /// Counts every SVID signed into the audit log (set once the log is open).
    audit: std::sync::OnceLock<crate::audit::Audit>,
}

fn ttl_secs(requested: u32, default: Duration) -> i64 {
    if requested == 0 {
        default.as_secs() as i64
    } else {
        i64::from(requested)
    }
}

impl CertificateAuthority {
    /// Loads the journal, checks every key it names is still in the key
    /// manager (and still non-extractable), then brings the schedule up to date.
    /// Several servers of one trust domain on one store and one token open the same
    /// journal and keys; the first to start makes them.
    pub fn open(
        settings: CaSettings,
        km: Arc<dyn KeyManager>,
        store: Arc<dyn DataStore>,
        upstream: Option<Upstream>,
    ) -> Result<Self, CaError> {
        // The first rotation check reads the stored journal.
        let journal = CaJournal::default();
        let ca = CertificateAuthority {
            settings,
            km,
            store,
            upstream,
            state: RwLock::new(CaState {
                journal,
                x509: None,
                jwt: None,
                memory: None,
            }),
            rotation: Mutex::new(stored_journal::UnsettledKeys::default()),
            rotation_trouble: Mutex::new(None),
            audit: std::sync::OnceLock::new(),
        };
        ca.rotate(unix_now())?;
        Ok(ca)
    }

    /// Counts the SVIDs this CA signs into `audit` from now on (once; later calls are ignored).
    pub(crate) fn set_audit(&self, audit: crate::audit::Audit) {
        let _ = self.audit.set(audit);
    }

    fn count_signed(&self, kind: ironroot_audit::SvidKind) {
        if let Some(a) = self.audit.get() {
            a.count_svid(kind);
        }
    }

    /// The trust domain it signs for.
    pub(crate) fn trust_domain(&self) -> &TrustDomain {
        &self.settings.trust_domain
    }

    fn subject(&self) -> CaSubject {
        CaSubject {
            country: self.settings.country.clone(),
            organization: self.settings.organization.clone(),
            trust_domain: self.settings.trust_domain.clone(),
        }
    }

    fn read_state(&self) -> Result<std::sync::RwLockReadGuard<'_, CaState>, CaError> {
        self.state
            .read()
            .map_err(|_| JournalError::LockPoisoned {
                what: "CA state lock",
            })
            .map_err(CaError::from)
    }

    fn check_in_trust_domain(&self, id: &SpiffeId) -> Result<(), CaError> {
        if id.trust_domain() != &self.settings.trust_domain {
            return Err(CaError::InvalidRequest(format!(
                "{id} is not in trust domain {}",
                self.settings.trust_domain
            )));
        }
        Ok(())
    }

    /// Signs an X.509-SVID for the public key of a verified CSR.
    pub fn sign_x509_svid_csr(
        &self,
        csr_der: &[u8],
        spiffe_id: &SpiffeId,
        ttl_seconds: u32,
        dns_names: &[String],
    ) -> Result<IssuedX509Svid, CaError> {
        let public_key = x509::parse_csr(csr_der)?;
        self.sign_x509_svid(&public_key, spiffe_id, ttl_seconds, dns_names)
    }

    /// Signs an X.509-SVID for a public key the caller has already proven it holds.
    pub(crate) fn sign_x509_svid(
        &self,
        public_key: &impl PublicKeyData,
        spiffe_id: &SpiffeId,
        ttl_seconds: u32,
        dns_names: &[String],
    ) -> Result<IssuedX509Svid, CaError> {
        self.check_in_trust_domain(spiffe_id)?;
        let started = std::time::Instant::now();
        let issued = if self.settings.signing == SigningMode::Memory {
            self.sign_x509_svid_in_memory(public_key, spiffe_id, ttl_seconds, dns_names)
        } else {
            self.sign_x509_svid_in_hsm(public_key, spiffe_id, ttl_seconds, dns_names)
        };
        crate::metrics::metrics().signing(
            crate::metrics::SvidKind::X509,
            self.settings.signing,
            started.elapsed(),
            issued.as_ref().map(|_| ()),
        );
        let issued = issued?;
        self.count_signed(ironroot_audit::SvidKind::X509);
        Ok(issued)
    }

    fn sign_x509_svid_in_hsm(
        &self,
        public_key: &impl PublicKeyData,
        spiffe_id: &SpiffeId,
        ttl_seconds: u32,
        dns_names: &[String],
    ) -> Result<IssuedX509Svid, CaError> {
        let active = self
            .read_state()?
            .x509
            .clone()
            .ok_or(CaError::NotReady("X.509"))?;
        let now = unix_now();
        let ttl = ttl_secs(ttl_seconds, self.settings.default_x509_svid_ttl);
        // An SVID never outlives the CA that signed it.
        let not_after = (now + ttl).min(active.not_after);
        if not_after <= now {
            return Err(CaError::NotReady("unexpired X.509"));
        }
        let params = x509::svid_params(spiffe_id, dns_names, now - x509::BACKDATE_SECS, not_after)?;
        let cert = params
            .signed_by(public_key, &active.issuer)
            .map_err(|e| active.issuer_key().explain(e))?;
        let mut chain = Vec::with_capacity(1 + active.chain_after_leaf.len());
        chain.push(cert.der().to_vec());
        chain.extend(active.chain_after_leaf.iter().cloned());
        Ok(IssuedX509Svid {
            chain,
            expires_at: not_after,
        })
    }

    /// Where X.509-SVIDs are signed.
    pub fn signing_mode(&self) -> SigningMode {
        self.settings.signing
    }

    /// Mints a JWT-SVID signed by the active JWT key.
    pub fn mint_jwt_svid(
        &self,
        spiffe_id: &SpiffeId,
        audience: &[String],
        ttl_seconds: u32,
    ) -> Result<(String, i64), CaError> {
        self.check_in_trust_domain(spiffe_id)?;
        let active = self
            .read_state()?
            .jwt
            .clone()
            .ok_or(CaError::NotReady("JWT"))?;
        let now = unix_now();
        let ttl = ttl_secs(ttl_seconds, self.settings.default_jwt_svid_ttl);
        let exp = (now + ttl).min(active.not_after);
        if exp <= now {
            return Err(CaError::NotReady("unexpired JWT"));
        }
        let started = std::time::Instant::now();
        let token = jwt::mint(
            &active.signer,
            &active.key_id,
            spiffe_id,
            audience,
            now,
            exp,
            self.settings.jwt_issuer.as_deref(),
        );
        crate::metrics::metrics().signing(
            crate::metrics::SvidKind::Jwt,
            self.settings.signing,
            started.elapsed(),
            token.as_ref().map(|_| ()),
        );
        let token = token?;
        self.count_signed(ironroot_audit::SvidKind::Jwt);
        Ok((token, exp))
    }

    /// The trust bundle: every published, unexpired X.509 root and JWT key.
    pub(crate) fn bundle(&self) -> Result<TrustBundle, CaError> {
        let now = unix_now();
        let state = self.read_state()?;
        let x509_authorities = match self.upstream.as_ref().map(|u| u.fixed_roots()) {
            Some(Some(roots)) => roots.to_vec(),
            // OpenBao: the roots of every unexpired CA key, each once.
            Some(None) => {
                let mut roots: Vec<Vec<u8>> = Vec::new();
                for slot in state.journal.x509.iter().filter(|s| s.not_after > now) {
                    for r in &slot.upstream_roots {
                        if !roots.contains(r) {
                            roots.push(r.clone());
                        }
                    }
                }
                roots
            }
            None => state
                .journal
                .x509
                .iter()
                .filter(|s| s.not_after > now)
                .map(|s| s.cert_der.clone())
                .collect(),
        };
        let jwt_authorities = state
            .journal
            .jwt
            .iter()
            .filter(|s| s.not_after > now)
            .map(|s| JwtAuthority {
                key_id: s.key_id.clone(),
                public_key_der: s.public_key_der.clone(),
                expires_at: s.not_after,
            })
            .collect();
        Ok(TrustBundle {
            trust_domain: self.settings.trust_domain.clone(),
            x509_authorities,
            jwt_authorities,
            sequence_number: state.journal.bundle_sequence,
            refresh_hint_secs: (self.settings.ca_ttl.as_secs() / 10).max(5),
        })
    }

    /// The active keys and where they live. [`CaError::NotReady`] until both an X.509 and a
    /// JWT key are active; [`CaError::Journal`] if the state lock is poisoned.
    pub fn status(&self) -> Result<CaStatus, CaError> {
        let state = self.read_state()?;
        let x = state.x509.as_ref().ok_or(CaError::NotReady("X.509"))?;
        let j = state.jwt.as_ref().ok_or(CaError::NotReady("JWT"))?;
        Ok(CaStatus {
            key_manager: self.km.describe(),
            x509_key_label: x.key_label.clone(),
            x509_not_after: x.not_after,
            jwt_key_id: j.key_id.clone(),
            upstream: self.upstream.as_ref().map(|u| u.description.clone()),
        })
    }
}

impl ActiveX509 {
    fn issuer_key(&self) -> &HsmKey {
        self.issuer.key()
    }
}

#[cfg(test)]
mod tests;
