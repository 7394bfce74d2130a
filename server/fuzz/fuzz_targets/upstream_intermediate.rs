//! The PKI upstream's answer check (`server/src/ca/upstream/validate.rs`): what OpenBao's
//! `sign-intermediate` returns before this server signs anything under it.
//!
//! The first byte picks the input:
//! * 0: the rest as OpenBao's answer (JSON with PEM certificates);
//! * 1: the rest cut by the fuzzer into DER certificates (ours, then `ca_chain`);
//! * otherwise: up to five certificates made with rcgen from a few keys (ours among them),
//!   each with fuzzer-chosen names, issuer (any of them, itself included) and signing key,
//!   CA flag, keyCertSign, URI SANs and validity, some damaged after signing, returned in a
//!   fuzzer-chosen order with repeats, checked both as DER and as OpenBao's PEM answer
//!   (which must agree).
//!
//! Never a panic; an accepted intermediate (read again by x509-parser, not by the code
//! under test) is the certificate sent, for our key, CA:true with keyCertSign, only this
//! trust domain's SPIFFE ID as URI SAN, valid now, and each certificate of
//! [ours, chain.., root] is issued and signed by the next, the root by itself; every
//! issuer is CA:true, with keyCertSign if it has a keyUsage, valid now; the `not_after`
//! given is the chain's earliest.
#![no_main]

use std::sync::OnceLock;

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_server::fuzzing::{check_intermediate, check_openbao_answer, CheckedIntermediate};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension, X509Certificate};

const NOW: i64 = 1_800_000_000;
const TD: &str = "example.org";

fn td() -> TrustDomain {
    TrustDomain::parse(TD).unwrap()
}

/// Keys made once: index 0 is ours (the new CA key the CSR was made with).
fn keys() -> &'static [KeyPair] {
    static K: OnceLock<Vec<KeyPair>> = OnceLock::new();
    K.get_or_init(|| {
        let mut k: Vec<KeyPair> = (0..4).map(|_| KeyPair::generate().unwrap()).collect();
        k.push(KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap());
        k.push(KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap());
        k
    })
}

fn our_key() -> &'static [u8] {
    keys()[0].der_bytes()
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    match mode {
        0 => {
            if let Ok(c) = check_openbao_answer(rest, our_key(), &td(), NOW) {
                assert_sound(&c, None);
            }
        }
        1 => {
            let mut u = Unstructured::new(rest);
            let Ok(ders) = cut(&mut u) else { return };
            let (cert, chain) = ders.split_first().expect("at least one");
            if let Ok(c) = check_intermediate(cert, chain, our_key(), &td(), NOW) {
                assert_sound(&c, Some(cert));
            }
        }
        _ => {
            let _ = built(&mut Unstructured::new(rest));
        }
    }
});

fn cut(u: &mut Unstructured<'_>) -> Result<Vec<Vec<u8>>> {
    let n = u.int_in_range(1..=4)?;
    let mut out = Vec::new();
    for i in 0..n {
        let len = if i + 1 == n {
            u.len()
        } else {
            u.int_in_range(0..=u.len())?
        };
        out.push(u.bytes(len)?.to_vec());
    }
    Ok(out)
}

/// One certificate's shape.
struct Spec {
    name: u8,
    key: usize,
    issuer: usize,
    signing_key: Option<usize>,
    ca: u8,
    cert_sign: bool,
    uris: u8,
    validity: u8,
}

fn params(s: &Spec) -> CertificateParams {
    let mut p = CertificateParams::default();
    let names = ["ours", "mid", "root", "other"];
    p.distinguished_name
        .push(DnType::CommonName, names[usize::from(s.name) % names.len()]);
    p.is_ca = match s.ca % 3 {
        0 => IsCa::Ca(BasicConstraints::Unconstrained),
        1 => IsCa::ExplicitNoCa,
        _ => IsCa::NoCa,
    };
    p.key_usages = if s.cert_sign {
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
    } else {
        vec![KeyUsagePurpose::DigitalSignature]
    };
    let uris: &[&str] = match s.uris % 5 {
        0 => &[],
        1 => &["spiffe://example.org"],
        2 => &["spiffe://evil.example"],
        3 => &["spiffe://example.org", "spiffe://evil.example"],
        _ => &["spiffe://example.org/x"],
    };
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    let (from, to) = match s.validity % 4 {
        0 | 1 => (NOW - 60, NOW + 3600),
        2 => (NOW - 7200, NOW - 1),
        _ => (NOW + 60, NOW + 3600),
    };
    p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(to).unwrap();
    p
}

fn built(u: &mut Unstructured<'_>) -> Result<()> {
    let keys = keys();
    let n = u.int_in_range(1..=5)?;
    let mut specs = Vec::new();
    for i in 0..n {
        specs.push(Spec {
            name: u.arbitrary()?,
            key: if i == 0 && u.ratio(7, 8)? {
                0
            } else {
                u.int_in_range(0..=keys.len() - 1)?
            },
            // By default the next certificate issues this one, the last itself.
            issuer: if u.ratio(3, 4)? {
                (i + 1).min(n - 1)
            } else {
                u.int_in_range(0..=n - 1)?
            },
            signing_key: if u.ratio(1, 8)? {
                Some(u.int_in_range(0..=keys.len() - 1)?)
            } else {
                None
            },
            ca: if u.ratio(3, 4)? { 0 } else { u.arbitrary()? },
            cert_sign: u.ratio(7, 8)?,
            uris: u.arbitrary()?,
            validity: u.arbitrary()?,
        });
    }
    let mut ders = Vec::new();
    for s in &specs {
        let p = params(s);
        let issuer_spec = &specs[s.issuer];
        let signer = &keys[s.signing_key.unwrap_or(issuer_spec.key)];
        let issuer = Issuer::new(params(issuer_spec), signer);
        let Ok(cert) = p.signed_by(&keys[s.key], &issuer) else {
            return Ok(());
        };
        let mut der = cert.der().to_vec();
        if u.ratio(1, 16)? {
            let at = u.int_in_range(0..=der.len() - 1)?;
            der[at] ^= u.int_in_range(1..=255)?;
        }
        ders.push(der);
    }
    let cert = ders[0].clone();
    let mut chain = Vec::new();
    if u.ratio(3, 4)? {
        chain.extend(ders[1..].iter().cloned());
    } else {
        for _ in 0..u.int_in_range(0..=5)? {
            chain.push(u.choose(&ders)?.clone());
        }
    }
    let direct = check_intermediate(&cert, &chain, our_key(), &td(), NOW);
    let pem = |d: &Vec<u8>| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone()));
    let answer = if u.arbitrary()? {
        serde_json::json!({
            "certificate": pem(&cert),
            "ca_chain": chain.iter().map(pem).collect::<Vec<_>>(),
        })
    } else {
        // No ca_chain: the chain as one issuing_ca text.
        serde_json::json!({
            "certificate": pem(&cert),
            "issuing_ca": chain.iter().map(pem).collect::<String>(),
        })
    };
    let via_answer = check_openbao_answer(answer.to_string().as_bytes(), our_key(), &td(), NOW);
    match (&direct, &via_answer) {
        (Ok(_), Ok(_)) => {}
        // With an empty chain the answer has no certificate text: refused for that.
        (Err(_), Err(_)) => {}
        _ if chain.is_empty() => {}
        _ => panic!("the DER and PEM paths disagree: {direct:?} / {via_answer:?}"),
    }
    if let Ok(c) = &direct {
        assert_sound(c, Some(&cert));
    }
    if let Ok(c) = &via_answer {
        assert_sound(c, Some(&cert));
    }
    Ok(())
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    X509Certificate::from_der(der)
        .expect("an accepted certificate parses")
        .1
}

fn assert_sound(c: &CheckedIntermediate, sent: Option<&Vec<u8>>) {
    if let Some(sent) = sent {
        assert_eq!(&c.cert_der, sent, "not the certificate sent");
    }
    let ours = parse(&c.cert_der);
    assert_eq!(
        &*ours.public_key().subject_public_key.data,
        our_key(),
        "accepted for another key"
    );
    let basic = ours.basic_constraints().ok().flatten();
    assert!(
        basic.is_some_and(|b| b.value.ca),
        "accepted without CA:true"
    );
    let usage = ours.key_usage().ok().flatten();
    assert!(
        usage.is_some_and(|k| k.value.key_cert_sign()),
        "accepted without keyCertSign"
    );
    for ext in ours.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    assert_eq!(
                        *uri,
                        format!("spiffe://{TD}"),
                        "accepted with a foreign URI SAN"
                    );
                }
            }
        }
    }
    let validity = ours.validity();
    assert!(
        validity.not_before.timestamp() <= NOW && NOW < validity.not_after.timestamp(),
        "accepted outside its validity"
    );
    assert_eq!(c.roots.len(), 1, "one root");
    let mut path: Vec<X509Certificate<'_>> = vec![ours];
    path.extend(c.chain.iter().map(|d| parse(d)));
    path.push(parse(&c.roots[0]));
    for (i, issuer) in path.iter().enumerate().skip(1) {
        let basic = issuer.basic_constraints().ok().flatten();
        assert!(
            basic.as_ref().is_some_and(|b| b.value.ca),
            "accepted under an issuer without CA:true"
        );
        if let Some(allowed) = basic.and_then(|b| b.value.path_len_constraint) {
            let below = path[..i]
                .iter()
                .filter(|c| c.issuer().as_raw() != c.subject().as_raw())
                .count();
            assert!(
                below <= allowed as usize,
                "accepted under an issuer whose path length forbids it"
            );
        }
        let usage = issuer.key_usage().ok().flatten();
        assert!(
            usage.is_none_or(|k| k.value.key_cert_sign()),
            "accepted under an issuer whose keyUsage lacks keyCertSign"
        );
        let v = issuer.validity();
        assert!(
            v.not_before.timestamp() <= NOW && NOW < v.not_after.timestamp(),
            "accepted under an issuer outside its validity"
        );
    }
    let earliest = path
        .iter()
        .map(|c| c.validity().not_after.timestamp())
        .min()
        .unwrap();
    assert_eq!(
        c.not_after, earliest,
        "not_after is not the chain's earliest"
    );
    for pair in path.windows(2) {
        let (child, parent) = (&pair[0], &pair[1]);
        assert_eq!(
            child.issuer().as_raw(),
            parent.subject().as_raw(),
            "a link names another issuer"
        );
        child
            .verify_signature(Some(parent.public_key()))
            .expect("a link is signed by the next certificate");
    }
    let root = path.last().unwrap();
    assert_eq!(
        root.issuer().as_raw(),
        root.subject().as_raw(),
        "root not self-issued"
    );
    root.verify_signature(None).expect("root is self-signed");
}
