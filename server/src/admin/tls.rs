//! The admin API over mTLS, on the Node API's TLS port (SPIRE's shape): a caller is
//! authorized per call, before the admin service sees the request, when its client
//! certificate is an X.509-SVID of this trust domain that verifies to the current bundle
//! now, and its SPIFFE ID is an admin: the SPIFFE ID of a registration entry with
//! `admin = true`, or listed in `[admin] admin_ids`. Everything else is refused, with the
//! rule that refused it.
//!
//! Checking a refused caller costs a signature verification and a store lookup, and any
//! workload of the trust domain holds an SVID to call with: an address and client
//! certificate whose calls keep being refused
//! (`node_api.limits.admin_refusals_per_ip_per_second`) are answered RESOURCE_EXHAUSTED
//! without either until their budget refills, and refusals are logged at most once per
//! 10 s with a count of those left out. An authorized admin spends nothing, and is not
//! held up by another caller on its host (the key includes the certificate, and every
//! certificate reaching this point verified to the bundle at the handshake).

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_runtime::unix_now;
use rustls::pki_types::{CertificateDer, UnixTime};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;
use tower::Service;
use tracing::warn;

use crate::ca::CertificateAuthority;
use crate::node::limits::{AdminPeer, NodeLimits};
use crate::status;
use crate::store::{DataStore, EntryFilter, PageRequest};

/// Entries read per store page while looking for an admin entry with the caller's ID.
const ENTRY_PAGE: usize = 100;

/// Who called the admin API over mTLS, once authorized: the audit log names them by it.
#[derive(Debug, Clone)]
pub(crate) struct AdminCaller(pub(crate) SpiffeId);

/// Decides whether a TLS peer may use the admin API.
pub(crate) struct AdminAuthorizer {
    pub(crate) trust_domain: TrustDomain,
    /// The bundle the caller's SVID must verify to (every active authority, so rotation works).
    pub(crate) ca: Arc<CertificateAuthority>,
    /// Entries with `admin = true`, looked up by the caller's SPIFFE ID (an index).
    pub(crate) store: Arc<dyn DataStore>,
    /// `[admin] admin_ids`: admins without an entry.
    pub(crate) admin_ids: HashSet<SpiffeId>,
}

/// The caller's SPIFFE ID when `chain` (leaf first) is an X.509-SVID of `td` that verifies
/// to `roots` at `now`; else UNAUTHENTICATED naming the rule.
pub(crate) fn svid_of_trust_domain(
    chain: Option<&[CertificateDer<'_>]>,
    roots: &[Vec<u8>],
    td: &TrustDomain,
    now: i64,
) -> Result<SpiffeId, Status> {
    let chain = match chain {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(Status::unauthenticated(
                "the admin API over TLS needs an X.509-SVID as client certificate \
                 (none was presented)",
            ))
        }
    };
    let now = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(now).unwrap_or(0),
    ));
    let id = ironroot_api::tls::verify_client_svid(roots, chain, now).map_err(|e| {
        Status::unauthenticated(format!(
            "admin API: the client certificate is not a valid X.509-SVID of {td} now \
             (it must verify to the trust domain's current bundle and be unexpired): {e}"
        ))
    })?;
    if !id.is_member_of(td) {
        return Err(Status::unauthenticated(format!(
            "admin API: {id} is not in trust domain {td}; only its own SVIDs may be admins"
        )));
    }
    Ok(id)
}

/// The refusal of an authenticated caller that is not an admin.
fn not_admin(id: &SpiffeId, why: &str) -> Status {
    Status::permission_denied(format!(
        "{id} is not an admin: {why} and it is not in [admin] admin_ids"
    ))
}

impl AdminAuthorizer {
    /// The admin behind this peer chain, or the refusal.
    pub(crate) async fn authorize(
        &self,
        chain: Option<&[CertificateDer<'_>]>,
    ) -> Result<AdminCaller, Status> {
        let roots = self.ca.bundle().map_err(status::ca)?.x509_authorities;
        let now = unix_now();
        let id = svid_of_trust_domain(chain, &roots, &self.trust_domain, now)?;
        if self.admin_ids.contains(&id) {
            return Ok(AdminCaller(id));
        }
        // Agents and servers hold SVIDs the CA issues by attestation, not by entry (no entry
        // may have an ID under /spire/): they are admins only when listed by name.
        if id.path().starts_with("/spire/") {
            return Err(not_admin(
                &id,
                "agent and server SVIDs (under /spire/) are never admins by entry",
            ));
        }
        if self.has_admin_entry(&id, now).await? {
            return Ok(AdminCaller(id));
        }
        Err(not_admin(
            &id,
            "no entry with admin = true has this SPIFFE ID",
        ))
    }

    /// Whether an unexpired entry with `admin = true` has SPIFFE ID `id`, read from the
    /// store (its index by SPIFFE ID) so a change to an entry counts at the next call.
    async fn has_admin_entry(&self, id: &SpiffeId, now: i64) -> Result<bool, Status> {
        let filter = EntryFilter {
            spiffe_id: Some(id.clone()),
            ..EntryFilter::default()
        };
        let mut after = None;
        loop {
            let page = self
                .store
                .list_entries(
                    &filter,
                    &PageRequest {
                        after,
                        size: ENTRY_PAGE,
                    },
                )
                .await
                .map_err(|e| {
                    // Fail closed, saying what could not be checked.
                    let s = status::store(e);
                    Status::new(
                        s.code(),
                        format!("cannot check whether {id} is an admin: {}", s.message()),
                    )
                })?;
            let found = page.items.iter().any(|e| {
                e.spec.admin
                    && e.spec.spiffe_id == *id
                    && (e.spec.expires_at == 0 || e.spec.expires_at > now)
            });
            if found {
                return Ok(true);
            }
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(false),
            }
        }
    }
}

/// The admin gRPC service behind [`AdminAuthorizer`]: every request is authorized before
/// it reaches `inner`, so no method can be served unchecked.
#[derive(Clone)]
pub(crate) struct AdminOverTls<S> {
    inner: S,
    authorizer: Arc<AdminAuthorizer>,
    limits: Arc<NodeLimits>,
}

impl<S> AdminOverTls<S> {
    pub(crate) fn new(inner: S, authorizer: AdminAuthorizer, limits: Arc<NodeLimits>) -> Self {
        AdminOverTls {
            inner,
            authorizer: Arc::new(authorizer),
            limits,
        }
    }
}

impl<S: NamedService> NamedService for AdminOverTls<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

impl<S> Service<http::Request<Body>> for AdminOverTls<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<Body>) -> Self::Future {
        // The clone is not ready; the one poll_ready readied goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let authorizer = self.authorizer.clone();
        let limits = self.limits.clone();
        Box::pin(async move {
            let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>();
            let peer = info.and_then(|i| i.get_ref().remote_addr());
            let certs = info.and_then(|i| i.peer_certs());
            let leaf = certs.as_deref().and_then(|c| c.first());
            let caller = AdminPeer::of(peer, leaf.map(|c| c.as_ref()));
            if let Err(over) = limits.admit_admin_call(&caller, Instant::now()) {
                return Ok(over.to_status().into_http());
            }
            match authorizer
                .authorize(certs.as_deref().map(Vec::as_slice))
                .await
            {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                    inner.call(req).await
                }
                Err(refusal) => {
                    limits.note_admin_refusal(&caller, Instant::now());
                    if let Some(left_out) = limits.log_admitted("admin call over TLS refused") {
                        warn!(
                            peer = ?peer,
                            method = req.uri().path(),
                            reason = refusal.message(),
                            refusals_not_logged_since_last_line = left_out,
                            "admin call over TLS refused"
                        );
                    }
                    Ok(refusal.into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn td(s: &str) -> TrustDomain {
        TrustDomain::parse(s).expect("trust domain")
    }

    struct Ca {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    fn ca() -> Ca {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let cert = p.self_signed(&key).expect("ca");
        Ca { cert, key }
    }

    /// A leaf with `uris` as URI SANs, valid from `not_before` to `not_after` (Unix seconds).
    fn leaf(ca: &Ca, uris: &[&str], not_before: i64, not_after: i64) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = uris
            .iter()
            .map(|u| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(*u).expect("uri")))
            .collect();
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).expect("time");
        p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).expect("time");
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert.der(), &ca.key).expect("issuer");
        p.signed_by(&key, &issuer).expect("leaf").der().to_vec()
    }

    const NOW: i64 = 1_800_000_000;

    fn check(chain: &[Vec<u8>], roots: &[Vec<u8>], now: i64) -> Result<SpiffeId, Status> {
        let chain: Vec<CertificateDer<'_>> = chain
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        svid_of_trust_domain(Some(&chain), roots, &td("example.org"), now)
    }

    #[test]
    fn an_unexpired_svid_of_the_trust_domain_is_authenticated() {
        let ca = ca();
        let roots = vec![ca.cert.der().to_vec()];
        let svid = leaf(&ca, &["spiffe://example.org/admin"], NOW - 60, NOW + 3600);
        let id = check(&[svid], &roots, NOW).expect("authenticated");
        assert_eq!(id.to_string(), "spiffe://example.org/admin");
    }

    #[test]
    fn an_svid_used_after_its_not_after_is_refused() {
        let ca = ca();
        let roots = vec![ca.cert.der().to_vec()];
        let svid = leaf(&ca, &["spiffe://example.org/admin"], NOW - 60, NOW + 10);
        let e = check(&[svid], &roots, NOW + 11).expect_err("expired");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("unexpired"), "{}", e.message());
        assert!(e.message().contains("Expired"), "{}", e.message());
    }

    #[test]
    fn an_svid_of_another_authority_is_refused() {
        let (ours, theirs) = (ca(), ca());
        let svid = leaf(
            &theirs,
            &["spiffe://example.org/admin"],
            NOW - 60,
            NOW + 3600,
        );
        let e = check(&[svid], &[ours.cert.der().to_vec()], NOW).expect_err("foreign CA");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("current bundle"), "{}", e.message());
    }

    #[test]
    fn an_svid_of_another_trust_domain_is_refused_even_under_our_roots() {
        let ca = ca();
        let svid = leaf(&ca, &["spiffe://other.org/admin"], NOW - 60, NOW + 3600);
        let e = check(&[svid], &[ca.cert.der().to_vec()], NOW).expect_err("other td");
        assert!(
            e.message().contains("not in trust domain example.org"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn a_certificate_with_two_uri_sans_is_not_an_svid() {
        let ca = ca();
        let svid = leaf(
            &ca,
            &["spiffe://example.org/a", "spiffe://example.org/b"],
            NOW - 60,
            NOW + 3600,
        );
        let e = check(&[svid], &[ca.cert.der().to_vec()], NOW).expect_err("two SANs");
        assert!(e.message().contains("exactly one"), "{}", e.message());
    }

    /// A certificate under `ca` naming `spiffe://example.org/admin`, shaped by `shape`.
    fn signed(ca: &Ca, shape: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        p.subject_alt_names = vec![rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from("spiffe://example.org/admin").expect("uri"),
        )];
        shape(&mut p);
        let issuer = rcgen::Issuer::from_ca_cert_der(ca.cert.der(), &ca.key).expect("issuer");
        p.signed_by(&key, &issuer).expect("cert").der().to_vec()
    }

    #[test]
    fn a_ca_certificate_naming_an_admin_is_not_a_client_svid() {
        // An intermediate under the trust domain's root (as a signing key's certificate or a
        // downstream CA would be), with an admin's SPIFFE ID and clientAuth.
        let root = ca();
        let intermediate = signed(&root, |p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
            p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        });
        let e = check(&[intermediate], &[root.cert.der().to_vec()], NOW).expect_err("a CA");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(e.message().contains("CaUsedAsEndEntity"), "{}", e.message());
    }

    #[test]
    fn a_leaf_for_server_authentication_only_is_not_a_client_svid() {
        let root = ca();
        let server_only = signed(&root, |p| {
            p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        });
        let e = check(&[server_only], &[root.cert.der().to_vec()], NOW).expect_err("no EKU");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(
            e.message().contains("RequiredEkuNotFound"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn no_client_certificate_is_unauthenticated() {
        let e = svid_of_trust_domain(None, &[], &td("example.org"), NOW).expect_err("none");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(
            e.message().contains("none was presented"),
            "{}",
            e.message()
        );
    }
}
