//! The CA's errors. Each variant of [`CaError`] is a class a caller acts on (the admin and
//! node APIs map them to gRPC codes in one place, `admin::ca_status`); the cause is a typed
//! `#[source]`, never a string. Messages embed the cause's text as well, as the HSM crate's
//! do, because an operator mostly sees one log line.

use std::path::PathBuf;

use ironroot_api::bundle::PemCertificatesError;
use ironroot_hsm::HsmError;

use crate::store::StoreError;

/// Why the CA could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaError {
    /// The request breaks a rule of what the CA signs (INVALID_ARGUMENT): the message is
    /// the rule, for the caller.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A CA key is missing, unusable or not the one the journal names.
    #[error("key manager: {0}")]
    Key(#[source] KeyError),
    /// The token failed to sign.
    #[error("signing failed: {0}")]
    Signing(#[source] SigningError),
    /// A certificate (or a JWT) could not be built or read.
    #[error("certificate: {0}")]
    Certificate(#[source] CertificateError),
    /// The upstream CA cannot be used.
    #[error("upstream CA: {0}")]
    Upstream(#[source] UpstreamError),
    /// The rotation journal cannot be read, written or trusted.
    #[error("CA journal: {0}")]
    Journal(#[source] JournalError),
    /// The datastore failed.
    #[error("store: {0}")]
    Store(#[source] StoreError),
    /// The CA has no usable authority of this kind yet (UNAVAILABLE).
    #[error("no active {0} authority (the CA is not initialised)")]
    NotReady(&'static str),
    /// The in-memory signing key's certificate expired and no new key could be certified
    /// (UNAVAILABLE): the HSM that certifies it has been unreachable for longer than the
    /// certificate's remaining life. Signing resumes once the HSM answers.
    #[error(
        "the in-memory X.509 signing key expired at {} and no new one could be certified by \
         the HSM yet (see `healthcheck`)",
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(*expired_at).unwrap_or(0)))
    )]
    SigningKeyExpired {
        /// Its certificate's notAfter, in unix seconds.
        expired_at: i64,
    },
}

/// A CA key that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The key manager failed looking the key up.
    #[error("key '{label}': {source}")]
    Lookup {
        /// The key's label in the token.
        label: String,
        /// The token's error (session lost, PIN, device trouble).
        #[source]
        source: HsmError,
    },
    /// A key the journal names is gone: fail closed rather than sign with another. The
    /// operator points the server at the token that holds it (or restores the token).
    #[error(
        "key '{label}' named in the CA journal is missing from {key_manager}; the CA cannot \
         sign with it"
    )]
    Missing {
        /// The label the journal names.
        label: String,
        /// The key store searched (its description: module, token).
        key_manager: String,
    },
    /// The key manager could not make a key.
    #[error("cannot create key '{label}': {source}")]
    Generate {
        /// The label the new key was to get.
        label: String,
        /// The token's error (full token, read-only session, unsupported mechanism).
        #[source]
        source: HsmError,
    },
    /// The key's public half is not a SubjectPublicKeyInfo.
    #[error("public key of '{label}' is not a valid SubjectPublicKeyInfo: {source}")]
    PublicKey {
        /// The key's label in the token.
        label: String,
        /// Why the DER does not decode.
        #[source]
        source: der::Error,
    },
    /// The key under a journal label is not the key of the journal's certificate or JWKS
    /// entry (`what`): someone replaced it.
    #[error("key '{label}' does not match the {what} in the journal")]
    Mismatch {
        /// The key's label in the token.
        label: String,
        /// What the journal pairs it with ("CA certificate", "JWT key").
        what: &'static str,
    },
}

/// The token refused or failed a signature.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SigningError {
    /// An X.509 signature (the token's error, kept aside because rcgen's carries none).
    #[error("key '{label}': {source}")]
    X509 {
        /// The signing key's label in the token.
        label: String,
        /// The token's error.
        #[source]
        source: HsmError,
    },
    /// A JWT signature.
    #[error("JWT key '{label}': {source}")]
    Jwt {
        /// The signing key's label in the token.
        label: String,
        /// The token's error.
        #[source]
        source: HsmError,
    },
}

/// A certificate or JWT that could not be built, or a stored certificate that does not read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertificateError {
    /// rcgen refused to build or sign the certificate.
    #[error("{0}")]
    Build(#[source] rcgen::Error),
    /// A validity bound outside what a certificate can carry.
    #[error("time {unix} out of range: {source}")]
    Time {
        /// The bound, in seconds since the Unix epoch.
        unix: i64,
        /// Why it is out of range.
        #[source]
        source: time::error::ComponentRange,
    },
    /// The trust domain's SPIFFE ID is not an IA5 string.
    #[error("trust domain URI: {0}")]
    TrustDomainUri(#[source] rcgen::Error),
    /// A DER certificate does not parse.
    #[error("cannot parse certificate: {0}")]
    Parse(#[source] der::Error),
    /// A notAfter beyond what a unix time in an i64 holds.
    #[error("notAfter out of range")]
    NotAfterOutOfRange,
    /// The journal's CA certificate cannot serve as an issuer.
    #[error("journal CA certificate: {0}")]
    JournalCertificate(#[source] rcgen::Error),
    /// A JWT header or claims set does not encode.
    #[error("{0}")]
    JwtEncoding(#[source] serde_json::Error),
}

/// An upstream CA that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// A certificate file cannot be read.
    #[error("cannot read certificate file {}: {source}", path.display())]
    ReadCertificates {
        /// The configured certificate file.
        path: PathBuf,
        /// The I/O error (missing file, permissions).
        #[source]
        source: std::io::Error,
    },
    /// A certificate file is not PEM, or holds no certificate.
    #[error("{} {source}", path.display())]
    Pem {
        /// The configured certificate file.
        path: PathBuf,
        /// What is wrong with its content.
        #[source]
        source: PemCertificatesError,
    },
    /// The key file cannot be read.
    #[error("cannot read key file {}: {source}", path.display())]
    ReadKey {
        /// The configured key file.
        path: PathBuf,
        /// The I/O error (missing file, permissions).
        #[source]
        source: std::io::Error,
    },
    /// The key file is not a key rcgen can sign with.
    #[error(
        "{} is not a PKCS#8 P-256/P-384/RSA private key in PEM ({source}); convert with \
         `openssl pkcs8 -topk8 -nocrypt`",
        path.display()
    )]
    KeyFormat {
        /// The configured key file.
        path: PathBuf,
        /// rcgen's reason for refusing it.
        #[source]
        source: rcgen::Error,
    },
    /// The token failed looking the upstream key up.
    #[error("upstream key '{label}': {source}")]
    KeyLookup {
        /// The configured label of the upstream key.
        label: String,
        /// The token's error.
        #[source]
        source: HsmError,
    },
    /// No key with the configured label in the token.
    #[error("upstream key '{label}' not found in {key_manager}")]
    KeyNotFound {
        /// The configured label of the upstream key.
        label: String,
        /// The key store searched (its description: module, token).
        key_manager: String,
    },
    /// The upstream key is not the key of the upstream certificate.
    #[error("the upstream key does not match the public key of {}", path.display())]
    KeyMismatch {
        /// The configured upstream certificate file.
        path: PathBuf,
    },
    /// The upstream certificate cannot serve as an issuer.
    #[error("cannot use {} as an issuer: {source}", path.display())]
    Issuer {
        /// The configured upstream certificate file.
        path: PathBuf,
        /// rcgen's reason for refusing it.
        #[source]
        source: rcgen::Error,
    },
    /// The upstream certificate has expired: no intermediate can be signed under it. The
    /// operator installs a renewed upstream certificate and restarts the server.
    #[error("the upstream CA certificate has expired")]
    Expired,
    /// The upstream key failed to sign the intermediate.
    #[error("signing the intermediate: {0}")]
    SignIntermediate(#[source] rcgen::Error),
    /// OpenBao's PKI engine did not sign this server's new CA certificate (unreachable,
    /// sealed, permission denied, or another refusal, named by the source). The CA keeps
    /// signing with its current key; the next rotation check asks again.
    #[error(
        "OpenBao PKI mount '{mount}' did not sign the new CA certificate ({path}): {source}; \
         the current CA key keeps signing and the next rotation check retries"
    )]
    OpenBao {
        /// The configured PKI mount.
        mount: String,
        /// The API path called.
        path: String,
        /// The client's error (sealed, unreachable, 403 with the path, HTTP status); boxed to
        /// keep `CaError` small.
        #[source]
        source: Box<HsmError>,
    },
    /// OpenBao answered with a certificate ironroot does not accept (fail closed: the key
    /// is not used).
    #[error("the certificate OpenBao PKI mount '{mount}' returned is refused: {reason}")]
    OpenBaoAnswer {
        /// The configured PKI mount.
        mount: String,
        /// The rule it breaks.
        #[source]
        reason: IntermediateRefused,
    },
}

/// Why a CA certificate returned by an upstream (OpenBao PKI) is refused: each rule an
/// intermediate of this server must meet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntermediateRefused {
    /// A returned certificate or PEM block does not parse.
    #[error("{what} is not a DER X.509 certificate in PEM: {reason}")]
    Unparseable {
        /// Which one ("the certificate", "ca_chain entry 2").
        what: String,
        /// The parser's reason.
        reason: String,
    },
    /// The certificate is for another public key than the new CA key the CSR was made with.
    #[error("the certificate is for another public key than this server's new CA key (the CSR's)")]
    WrongKey,
    /// No basicConstraints with CA:true: it could not sign SVIDs.
    #[error("the certificate is not a CA certificate (no basicConstraints CA:true)")]
    NotCa,
    /// No keyUsage keyCertSign.
    #[error("the certificate's keyUsage lacks keyCertSign")]
    NoKeyCertSign,
    /// A URI SAN other than the trust domain's SPIFFE ID (SPIFFE X.509-SVID: a signing
    /// certificate may carry only that one).
    #[error("the certificate's URI SAN {uri:?} is not this trust domain's SPIFFE ID {expected}")]
    ForeignUriSan {
        /// The URI found.
        uri: String,
        /// `spiffe://<trust domain>`.
        expected: String,
    },
    /// Already expired, or not yet valid, at the server's clock.
    #[error("the certificate is not valid now (notBefore {not_before}, notAfter {not_after}, now {now})")]
    NotValidNow {
        /// notBefore, unix seconds.
        not_before: i64,
        /// notAfter, unix seconds.
        not_after: i64,
        /// The server's time.
        now: i64,
    },
    /// A certificate of the chain is not signed by the next one (or names another issuer).
    #[error("chain position {position} is not issued and signed by the certificate after it")]
    BrokenChain {
        /// 0: our certificate; 1: the first of `ca_chain`, ...
        position: usize,
    },
    /// A certificate of the chain above ours is not a CA certificate.
    #[error(
        "chain position {position} (an issuer of this server's CA certificate) is not a CA \
         certificate (no basicConstraints CA:true)"
    )]
    IssuerNotCa {
        /// 1: the first of `ca_chain`, ...
        position: usize,
    },
    /// A certificate of the chain above ours has a keyUsage without keyCertSign.
    #[error(
        "chain position {position} (an issuer of this server's CA certificate) has a keyUsage \
         without keyCertSign"
    )]
    IssuerNoKeyCertSign {
        /// 1: the first of `ca_chain`, ...
        position: usize,
    },
    /// A certificate of the chain above ours allows fewer CA certificates below it than
    /// there are (its pathLenConstraint): relying parties would refuse every SVID.
    #[error(
        "chain position {position} allows {allowed} CA certificate(s) below it \
         (pathLenConstraint) but {cas_below} stand below it, counting this server's; issue \
         this server's CA from an issuer whose path length allows it"
    )]
    IssuerPathLength {
        /// 1: the first of `ca_chain`, ...
        position: usize,
        /// Its pathLenConstraint.
        allowed: u8,
        /// The CA certificates below it (not self-issued), this server's included.
        cas_below: usize,
    },
    /// A certificate of the chain above ours is expired or not yet valid.
    #[error(
        "chain position {position} (an issuer of this server's CA certificate) is not valid \
         now (notBefore {not_before}, notAfter {not_after}, now {now})"
    )]
    IssuerNotValidNow {
        /// 1: the first of `ca_chain`, ...
        position: usize,
        /// notBefore, unix seconds.
        not_before: i64,
        /// notAfter, unix seconds.
        not_after: i64,
        /// The server's time.
        now: i64,
    },
    /// The chain ends in a root other than the ones `[upstream] root_file` pins: the PKI
    /// mount (or whoever answers at its address) issues under another root, which the
    /// bundle would then publish.
    #[error(
        "the chain OpenBao returned ends in a root (SHA-256 {root_sha256}) that is not one of \
         upstream.root_file's; if the mount's root was replaced on purpose, add the new root \
         to that file"
    )]
    RootNotPinned {
        /// The SHA-256 of the returned root's DER, hex.
        root_sha256: String,
    },
    /// The chain does not end in a self-signed root (the mount's issuer was imported without
    /// its chain): the bundle would have no root.
    #[error(
        "the chain OpenBao returned does not end in a self-signed root; import the issuer's \
         full chain into the PKI mount (`<mount>/issuers/import/bundle`)"
    )]
    NoRoot,
}

/// A rotation journal that cannot be read, written or trusted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The stored journal is not JSON of the journal's shape.
    #[error("stored journal is unreadable: {0}")]
    Unreadable(#[source] serde_json::Error),
    /// The stored journal was written by another version: run the server version that wrote
    /// it.
    #[error("stored journal has version {found}, this server reads version {supported}")]
    Version {
        /// The version in the stored journal.
        found: u32,
        /// The only version this server reads.
        supported: u32,
    },
    /// The journal does not encode.
    #[error("cannot encode journal: {0}")]
    Encode(#[source] serde_json::Error),
    /// The stored journal changed under every attempt of one rotation check: other servers
    /// of the trust domain keep rotating at the same moment. The next check tries again.
    #[error(
        "the journal changed in the store under each of {attempts} attempts (other servers of \
         the trust domain are rotating at the same time); trying again at the next check"
    )]
    Contended {
        /// How many times the check re-read the journal and planned again.
        attempts: usize,
    },
    /// A thread panicked holding a lock (`what`): the state behind it is not trusted.
    #[error("{what} poisoned")]
    LockPoisoned {
        /// Which lock ("CA state lock", "rotation lock").
        what: &'static str,
    },
}

impl CaError {
    /// The key manager could not be reached (the HSM is down or cut off): nothing is known to
    /// be wrong with the keys, and the same call may work once the key manager has
    /// reconnected by itself. Clients see UNAVAILABLE (retry).
    pub fn is_key_manager_unreachable(&self) -> bool {
        match self {
            CaError::Key(KeyError::Lookup { source, .. } | KeyError::Generate { source, .. })
            | CaError::Signing(
                SigningError::X509 { source, .. } | SigningError::Jwt { source, .. },
            )
            | CaError::Upstream(UpstreamError::KeyLookup { source, .. }) => source.is_unreachable(),
            _ => false,
        }
    }

    /// The key manager (or the journal) answered that an active key is gone, unsafe, or not
    /// the one the journal names: the CA must stop signing with it (fail closed). Anything
    /// else that fails a rotation check (an unreachable HSM, a failed PKCS#11 call, the
    /// store) says nothing against the keys, which stay in use.
    pub(crate) fn condemns_active_key(&self) -> bool {
        match self {
            CaError::Key(
                KeyError::Missing { .. } | KeyError::Mismatch { .. } | KeyError::PublicKey { .. },
            ) => true,
            CaError::Key(KeyError::Lookup { source, .. }) => matches!(
                source,
                HsmError::KeyExtractable { .. }
                    | HsmError::UnsupportedKey { .. }
                    | HsmError::KeyAmbiguous { .. }
                    | HsmError::KeyNotFound { .. }
            ),
            CaError::Certificate(CertificateError::JournalCertificate(_)) => true,
            _ => false,
        }
    }
}

impl From<KeyError> for CaError {
    fn from(e: KeyError) -> Self {
        CaError::Key(e)
    }
}

impl From<SigningError> for CaError {
    fn from(e: SigningError) -> Self {
        CaError::Signing(e)
    }
}

impl From<CertificateError> for CaError {
    fn from(e: CertificateError) -> Self {
        CaError::Certificate(e)
    }
}

impl From<UpstreamError> for CaError {
    fn from(e: UpstreamError) -> Self {
        CaError::Upstream(e)
    }
}

impl From<JournalError> for CaError {
    fn from(e: JournalError) -> Self {
        CaError::Journal(e)
    }
}

impl From<StoreError> for CaError {
    fn from(e: StoreError) -> Self {
        CaError::Store(e)
    }
}
