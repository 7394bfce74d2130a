//! SPIFFE-aware TLS verification (X.509-SVID spec §5): a peer is accepted when
//! its chain verifies to the trust domain's bundle and its leaf's one URI SAN
//! is an accepted SPIFFE ID. SVIDs carry no DNS name, so the usual hostname
//! check is replaced by the SPIFFE ID check. No I/O.

use std::sync::Arc;

use der::Decode;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use crate::spiffe_id::SpiffeId;

/// The SPIFFE ID in the leaf certificate's URI SAN; exactly one is allowed.
pub fn svid_spiffe_id(leaf_der: &[u8]) -> Result<SpiffeId, String> {
    let cert = x509_cert::Certificate::from_der(leaf_der)
        .map_err(|e| format!("the peer certificate does not parse: {e}"))?;
    let san_oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.17");
    let ext = cert
        .tbs_certificate
        .extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == san_oid))
        .ok_or("the peer certificate has no subjectAltName (not an X.509-SVID)")?;
    let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
        .map_err(|e| format!("the peer subjectAltName does not parse: {e}"))?;
    let uris: Vec<String> = san
        .0
        .iter()
        .filter_map(|g| match g {
            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [one] => SpiffeId::parse(one).map_err(|e| format!("peer URI SAN {one:?}: {e}")),
        [] => Err("the peer certificate has no URI SAN (not an X.509-SVID)".into()),
        _ => Err(format!(
            "the peer certificate has {} URI SANs; an X.509-SVID has exactly one",
            uris.len()
        )),
    }
}

/// Verifies `end_entity` (with `intermediates`) to one of `roots` for `usage`;
/// `who` ("server"/"client") names the peer in errors.
fn verify_chain(
    roots: &[CertificateDer<'static>],
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    now: UnixTime,
    usage: webpki::KeyUsage,
    algs: WebPkiSupportedAlgorithms,
    who: &str,
) -> Result<(), rustls::Error> {
    let anchors: Vec<_> = roots
        .iter()
        .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
        .collect();
    if anchors.is_empty() {
        return Err(bad(
            "the trust bundle holds no usable root certificate".into()
        ));
    }
    let ee = webpki::EndEntityCert::try_from(end_entity)
        .map_err(|e| bad(format!("{who} certificate: {e}")))?;
    ee.verify_for_usage(algs.all, &anchors, intermediates, now, usage, None, None)
        .map_err(|e| {
            bad(format!(
                "{who} certificate does not verify to the trust bundle: {e}"
            ))
        })?;
    Ok(())
}

/// Verifies a client's X.509-SVID chain (`chain`: leaf first, then the intermediates it
/// sent) to `roots` at `now`, for client authentication, and returns the leaf's SPIFFE ID.
/// What a service calls per request when a connection may outlive the SVID it presented
/// or an authority of the bundle it was verified to; errors say which rule failed.
pub fn verify_client_svid(
    roots: &[Vec<u8>],
    chain: &[CertificateDer<'_>],
    now: UnixTime,
) -> Result<SpiffeId, String> {
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or("no client certificate was presented")?;
    let roots: Vec<CertificateDer<'static>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.clone()))
        .collect();
    verify_chain(
        &roots,
        leaf,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        rustls::crypto::ring::default_provider().signature_verification_algorithms,
        "client",
    )
    .map_err(|e| match e {
        rustls::Error::General(m) => m,
        other => other.to_string(),
    })?;
    svid_spiffe_id(leaf)
}

/// The handshake-signature methods both verifiers share: ring's algorithms.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(message, cert, dss, &self.algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(message, cert, dss, &self.algs)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.algs.supported_schemes()
        }
    };
}

/// Verifies a server's X.509-SVID against a bundle and one expected SPIFFE ID.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Vec<CertificateDer<'static>>,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// `roots`: the trust domain's X.509 authorities (DER).
    pub fn new(roots: Vec<Vec<u8>>, expected: SpiffeId) -> Arc<Self> {
        Arc::new(SpiffeServerVerifier {
            roots: roots.into_iter().map(CertificateDer::from).collect(),
            expected,
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

fn bad(msg: String) -> rustls::Error {
    rustls::Error::General(msg)
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        verify_chain(
            &self.roots,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            self.algs,
            "server",
        )?;
        let id = svid_spiffe_id(end_entity).map_err(bad)?;
        if id != self.expected {
            return Err(bad(format!(
                "server presented {id}, expected {}",
                self.expected
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

/// The roots a verifier trusts right now (the bundle changes with CA rotation).
pub type RootsSource = Arc<dyn Fn() -> Vec<Vec<u8>> + Send + Sync>;

/// Verifies client X.509-SVIDs against the current bundle. Client
/// certificates are optional at the TLS layer (an agent attesting for the
/// first time has none); services that need one check
/// [`svid_spiffe_id`] of the verified peer certificate themselves.
pub struct SpiffeClientVerifier {
    roots: RootsSource,
    algs: WebPkiSupportedAlgorithms,
}

impl std::fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SpiffeClientVerifier")
    }
}

impl SpiffeClientVerifier {
    /// A verifier of client SVIDs against `roots`, with ring's signature algorithms.
    pub fn new(roots: RootsSource) -> Arc<Self> {
        Arc::new(SpiffeClientVerifier {
            roots,
            algs: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let roots: Vec<CertificateDer<'static>> = (self.roots)()
            .into_iter()
            .map(CertificateDer::from)
            .collect();
        verify_chain(
            &roots,
            end_entity,
            intermediates,
            now,
            webpki::KeyUsage::client_auth(),
            self.algs,
            "client",
        )?;
        svid_spiffe_id(end_entity).map_err(bad)?;
        Ok(rustls::server::danger::ClientCertVerified::assertion())
    }

    handshake_signatures!();
}
