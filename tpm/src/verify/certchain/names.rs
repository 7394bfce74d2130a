//! Name constraints of a CA (RFC 5280 §4.2.1.10) over the certificates below it.
//!
//! Evaluated: permitted directoryName subtrees. A subject DN (when not empty) and every
//! directoryName of the subjectAltName must start with the RDNs of one permitted base,
//! compared as encoded: a name written with another string type or case than its base is
//! refused, never let through. Everything else a CA can constrain (excluded subtrees, other
//! name forms, minimum/maximum) is refused as [`CertRuleError::NameConstraintUnsupported`]:
//! a verifier that skipped a constraint it cannot evaluate would let the CA's names escape.

use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{NameConstraints, SubjectAltName};
use x509_cert::name::Name;
use x509_cert::Certificate;

use super::rules::{cert_name, CertRuleError};

fn form(n: &GeneralName) -> &'static str {
    match n {
        GeneralName::OtherName(_) => "otherName",
        GeneralName::Rfc822Name(_) => "rfc822Name",
        GeneralName::DnsName(_) => "dNSName",
        GeneralName::DirectoryName(_) => "directoryName",
        GeneralName::EdiPartyName(_) => "ediPartyName",
        GeneralName::UniformResourceIdentifier(_) => "uniformResourceIdentifier",
        GeneralName::IpAddress(_) => "iPAddress",
        GeneralName::RegisteredId(_) => "registeredID",
    }
}

/// `name` is `base` or below it: its first RDNs are `base`'s.
fn within(name: &Name, base: &Name) -> bool {
    base.0.len() <= name.0.len() && base.0.iter().zip(&name.0).all(|(b, n)| b == n)
}

/// Checks `cert` (below `ca` in the path; `san` its subjectAltName) against `nc`.
pub(super) fn check(
    ca: &Certificate,
    nc: &NameConstraints,
    cert: &Certificate,
    san: Option<&SubjectAltName>,
) -> Result<(), CertRuleError> {
    let unsupported = |what: String| CertRuleError::NameConstraintUnsupported {
        cert: cert_name(ca),
        what,
    };
    if nc.excluded_subtrees.is_some() {
        return Err(unsupported("excludedSubtrees".into()));
    }
    let Some(permitted) = &nc.permitted_subtrees else {
        return Ok(());
    };
    if permitted.is_empty() {
        return Err(unsupported("an empty permittedSubtrees".into()));
    }
    let mut bases = Vec::with_capacity(permitted.len());
    for s in permitted {
        if s.minimum != 0 || s.maximum.is_some() {
            return Err(unsupported("a subtree with minimum or maximum".into()));
        }
        match &s.base {
            GeneralName::DirectoryName(n) => bases.push(n),
            other => return Err(unsupported(format!("a permitted {} subtree", form(other)))),
        }
    }
    let subject = &cert.tbs_certificate.subject;
    let san_names = san.iter().flat_map(|s| s.0.iter()).filter_map(|g| match g {
        GeneralName::DirectoryName(n) => Some(n),
        _ => None,
    });
    let subject = (!subject.0.is_empty()).then_some(subject);
    for name in subject.into_iter().chain(san_names) {
        if !bases.iter().any(|b| within(name, b)) {
            let permitted: Vec<String> = bases.iter().map(|b| format!("'{b}'")).collect();
            return Err(CertRuleError::NameConstraintViolated {
                ca: cert_name(ca),
                cert: cert_name(cert),
                name: name.to_string(),
                permitted: permitted.join(" or "),
            });
        }
    }
    Ok(())
}
