//! `ironroot_tpm::verify` against a real (software) TPM: credentials made in software are
//! activated by swtpm, and quotes / certifications swtpm signs verify. The TPM is driven
//! with tpm2-tools, independently of `ironroot_tpm::device`. Each test runs its own swtpm
//! (logs under target/test-logs/<test>/).

use ironroot_testkit::tpm2_tools::{cert_spki, credential_file, Tpm2Rig};
use ironroot_tpm::verify::devid::{certified_key, DevIdError};
use ironroot_tpm::verify::eventlog::HashAlg;
use ironroot_tpm::verify::quote::{Quote, QuoteError};
use ironroot_tpm::verify::{
    make_credential, pcr_digest, verify_signature, Attest, Attested, EccCurve, PcrSelection,
    PublicKey, TpmError, TpmPublic, TpmSignature,
};

const SECRET: &[u8] = b"ironroot credential secret 32by!";

/// Which EK, and how ActivateCredential authorizes it.
struct EkCase {
    createek_alg: &'static str,
    cert_index: &'static str,
    /// EK template L-1 (RSA) clears userWithAuth: the EK needs PolicySecret(endorsement).
    /// The P-384 EK (template H-3) sets userWithAuth, so its (empty) password works, while
    /// its policy is a PolicyOR a plain PolicySecret session would not satisfy.
    policy_session: bool,
}

fn activation(case: EkCase) {
    let Some(rig) = Tpm2Rig::new() else { return };
    rig.run(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", case.createek_alg, "-u", "ek.pub"],
    );
    rig.run(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g", "sha256", "-s", "rsassa",
        ],
    );
    rig.run(
        "tpm2_readpublic",
        &["-c", "ak.ctx", "-o", "ak.pub", "-n", "ak.name"],
    );
    let ek = TpmPublic::from_tpm2b(&rig.read("ek.pub")).unwrap();
    let ak = TpmPublic::from_tpm2b(&rig.read("ak.pub")).unwrap();
    let ak_name = rig.read("ak.name");
    assert_eq!(ak.name(), ak_name, "our Name of the AK is the TPM's");

    // The standard template gives the key swtpm_setup certified.
    let cert = rig.nv_read(case.cert_index, "ek.crt");
    ek.check_spki(&cert_spki(&cert)).unwrap();

    // The credential made for the AK's Name is activated by the TPM.
    let made = make_credential(&ek, &ak_name, SECRET).unwrap();
    let out = activate(
        &rig,
        &case,
        &made.id_object,
        &made.encrypted_secret,
        "right",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rig.read("right.out"), SECRET);

    // Made for another Name (the EK's, or any other), it fails the TPM's integrity check.
    let other_name = [&[0x00, 0x0b][..], &[0x42; 32]].concat();
    for name in [ek.name(), other_name] {
        let wrong = make_credential(&ek, &name, SECRET).unwrap();
        let out = activate(
            &rig,
            &case,
            &wrong.id_object,
            &wrong.encrypted_secret,
            "wrong",
        );
        assert!(
            !out.status.success(),
            "activation for another Name succeeded"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("integrity check failed"));
        assert!(!rig.path("wrong.out").exists());
    }

    // A tampered blob fails too.
    let mut tampered = made.id_object.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let out = activate(&rig, &case, &tampered, &made.encrypted_secret, "tampered");
    assert!(!out.status.success(), "a tampered credential was activated");
}

fn activate(
    rig: &Tpm2Rig,
    case: &EkCase,
    id_object: &[u8],
    secret: &[u8],
    tag: &str,
) -> std::process::Output {
    let cred = format!("{tag}.cred");
    let out = format!("{tag}.out");
    rig.write(&cred, &credential_file(id_object, secret));
    let mut args = vec!["-c", "ak.ctx", "-C", "ek.ctx", "-i", &cred, "-o", &out];
    if !case.policy_session {
        return rig.try_run("tpm2_activatecredential", &args);
    }
    rig.run(
        "tpm2_startauthsession",
        &["--policy-session", "-S", "session.ctx"],
    );
    rig.run("tpm2_policysecret", &["-S", "session.ctx", "-c", "e"]);
    args.extend(["-P", "session:session.ctx"]);
    let result = rig.try_run("tpm2_activatecredential", &args);
    rig.run("tpm2_flushcontext", &["session.ctx"]);
    result
}

#[test]
fn rsa_ek_activates_a_software_credential() {
    activation(EkCase {
        createek_alg: "rsa",
        cert_index: "0x01c00002",
        policy_session: true,
    });
}

#[test]
fn p384_ek_activates_a_software_credential() {
    activation(EkCase {
        createek_alg: "ecc384",
        cert_index: "0x01c00016",
        policy_session: false,
    });
}

#[test]
fn p384_ek_is_the_certified_one() {
    let Some(rig) = Tpm2Rig::new() else { return };
    rig.run(
        "tpm2_createek",
        &["-c", "ek.ctx", "-G", "ecc384", "-u", "ek.pub"],
    );
    let ek = TpmPublic::from_tpm2b(&rig.read("ek.pub")).unwrap();
    assert!(matches!(
        ek.key,
        PublicKey::Ecc {
            curve: EccCurve::NistP384,
            ..
        }
    ));
    assert_eq!(ek.name_alg, HashAlg::Sha384);
    let cert = rig.nv_read("0x01c00016", "ek.crt");
    assert!(ek.matches_spki(&cert_spki(&cert)));
    // And not the RSA EK's certificate.
    let rsa_cert = rig.nv_read("0x01c00002", "ek-rsa.crt");
    assert!(matches!(
        ek.check_spki(&cert_spki(&rsa_cert)),
        Err(TpmError::KeyMismatch { .. })
    ));
}

/// The server's quote check ([`Quote`]) on a real quote of sha256 PCRs 0-3: it passes as
/// asked, and each rule refuses with its own variant.
fn check_quote_rules(ak: &TpmPublic, msg: &[u8], sig: &[u8], nonce: &[u8], values: &[&[u8]]) {
    let sent: Vec<(u32, &[u8])> = (0u32..).zip(values.iter().copied()).collect();
    let check = |nonce: &[u8], pcrs: &[u32], sent: &[(u32, &[u8])]| {
        Quote::parse(msg, nonce).and_then(|q| q.verify(ak, sig, HashAlg::Sha256, pcrs, sent))
    };
    let quoted = check(nonce, &[0, 1, 2, 3], &sent).unwrap();
    assert_eq!(quoted.len(), 4);
    assert_eq!(quoted[3].1, values[3]);
    assert!(matches!(
        check(b"another nonce", &[0, 1, 2, 3], &sent),
        Err(QuoteError::Nonce { .. })
    ));
    assert!(matches!(
        check(nonce, &[0, 1, 2], &sent),
        Err(QuoteError::Selection { .. })
    ));
    assert!(matches!(
        check(nonce, &[0, 1, 2, 3], &sent[..3]),
        Err(QuoteError::MissingPcrValue { index: 3, .. })
    ));
    let mut forged = sent.clone();
    forged[3].1 = &[0u8; 32];
    assert!(matches!(
        check(nonce, &[0, 1, 2, 3], &forged),
        Err(QuoteError::PcrDigest)
    ));
    let e = Quote::parse(msg, nonce)
        .and_then(|q| q.verify(ak, sig, HashAlg::Sha1, &[0, 1, 2, 3], &sent))
        .unwrap_err();
    assert!(matches!(e, QuoteError::Selection { .. }), "{e}");
    assert_eq!(e.rule(), "quote");
}

#[test]
fn quotes_by_rsassa_rsapss_and_ecdsa_aks_verify() {
    let Some(rig) = Tpm2Rig::new() else { return };
    rig.run("tpm2_createek", &["-c", "ek.ctx", "-G", "rsa"]);
    // A non-zero PCR among the quoted ones.
    rig.run(
        "tpm2_pcrextend",
        &["3:sha256=0303030303030303030303030303030303030303030303030303030303030303"],
    );
    for (alg, scheme) in [("rsa", "rsassa"), ("rsa", "rsapss"), ("ecc", "ecdsa")] {
        rig.run(
            "tpm2_createak",
            &[
                "-C", "ek.ctx", "-c", "ak.ctx", "-G", alg, "-g", "sha256", "-s", scheme, "-u",
                "ak.pub",
            ],
        );
        let ak = TpmPublic::from_tpm2b(&rig.read("ak.pub")).unwrap();
        ak.ensure_attestation_key().unwrap();
        let nonce = "5eed0123456789abcdef5eed";
        rig.run(
            "tpm2_quote",
            &[
                "-c",
                "ak.ctx",
                "-l",
                "sha256:0,1,2,3",
                "-q",
                nonce,
                "-m",
                "quote.msg",
                "-s",
                "quote.sig",
                "-o",
                "pcrs.out",
                "--pcrs_format",
                "values",
                "-g",
                "sha256",
                "--scheme",
                scheme,
            ],
        );
        let (msg, sig_bytes, pcrs) = (
            rig.read("quote.msg"),
            rig.read("quote.sig"),
            rig.read("pcrs.out"),
        );
        let attest = Attest::parse(&msg).unwrap();
        assert_eq!(attest.extra_data, hex::decode(nonce).unwrap());
        let Attested::Quote {
            pcr_select,
            pcr_digest: digest,
        } = &attest.attested
        else {
            panic!("{:?}", attest.attested)
        };
        assert_eq!(
            pcr_select,
            &[PcrSelection {
                hash: HashAlg::Sha256,
                pcrs: vec![0, 1, 2, 3]
            }]
        );
        let values: Vec<&[u8]> = pcrs.chunks(32).collect();
        assert_eq!(values.len(), 4);
        assert_ne!(values[3], [0; 32]);
        assert_eq!(digest, &pcr_digest(HashAlg::Sha256, &values).unwrap());
        attest
            .check_quote(&hex::decode(nonce).unwrap(), HashAlg::Sha256, &values)
            .unwrap();
        check_quote_rules(&ak, &msg, &sig_bytes, &hex::decode(nonce).unwrap(), &values);

        let sig = TpmSignature::parse(&sig_bytes).unwrap();
        assert_eq!(sig.marshal().unwrap(), sig_bytes);
        verify_signature(&ak, &msg, &sig).unwrap_or_else(|e| panic!("{alg}/{scheme}: {e}"));
        for i in [0, 7, msg.len() / 2, msg.len() - 1] {
            let mut bad = msg.clone();
            bad[i] ^= 0x01;
            assert!(
                matches!(
                    verify_signature(&ak, &bad, &sig),
                    Err(TpmError::SignatureInvalid { .. })
                ),
                "{alg}/{scheme}: flipped message byte {i} verified"
            );
        }
        let mut bad_sig = sig_bytes.clone();
        let n = bad_sig.len();
        bad_sig[n - 5] ^= 0x80;
        let bad_sig = TpmSignature::parse(&bad_sig).unwrap();
        assert!(matches!(
            verify_signature(&ak, &msg, &bad_sig),
            Err(TpmError::SignatureInvalid { .. })
        ));
    }
}

#[test]
fn certify_names_the_certified_key() {
    let Some(rig) = Tpm2Rig::new() else { return };
    rig.run("tpm2_createek", &["-c", "ek.ctx", "-G", "rsa"]);
    rig.run(
        "tpm2_createak",
        &[
            "-C", "ek.ctx", "-c", "ak.ctx", "-G", "ecc", "-g", "sha256", "-s", "ecdsa", "-u",
            "ak.pub",
        ],
    );
    rig.run(
        "tpm2_createprimary",
        &[
            "-C",
            "o",
            "-G",
            "ecc256:ecdsa-sha256",
            "-c",
            "key.ctx",
            "-a",
            "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
        ],
    );
    rig.run(
        "tpm2_readpublic",
        &["-c", "key.ctx", "-o", "key.pub", "-n", "key.name"],
    );
    rig.run(
        "tpm2_certify",
        &[
            "-c",
            "key.ctx",
            "-C",
            "ak.ctx",
            "-g",
            "sha256",
            "-o",
            "attest.out",
            "-s",
            "attest.sig",
        ],
    );
    let ak = TpmPublic::from_tpm2b(&rig.read("ak.pub")).unwrap();
    let key = TpmPublic::from_tpm2b(&rig.read("key.pub")).unwrap();
    let msg = rig.read("attest.out");
    let attest = Attest::parse(&msg).unwrap();
    let Attested::Certify { name, .. } = &attest.attested else {
        panic!("{:?}", attest.attested)
    };
    assert_eq!(name, &key.name());
    assert_eq!(name, &rig.read("key.name"));
    let sig = TpmSignature::parse(&rig.read("attest.sig")).unwrap();
    verify_signature(&ak, &msg, &sig).unwrap();
    let mut bad = msg.clone();
    let n = bad.len();
    bad[n - 1] ^= 1; // the certified Name
    assert!(matches!(
        verify_signature(&ak, &bad, &sig),
        Err(TpmError::SignatureInvalid { .. })
    ));
    // The EK cannot stand in for the AK.
    rig.run("tpm2_readpublic", &["-c", "ek.ctx", "-o", "ek.pub"]);
    let ek = TpmPublic::from_tpm2b(&rig.read("ek.pub")).unwrap();
    assert!(verify_signature(&ek, &msg, &sig).is_err());

    // The DevID rules on the same certify: the key has a DevID's shape (ECC P-256,
    // fixedTPM, fixedParent, sign) and the AK certified it.
    let (public, sig_bytes) = (rig.read("key.pub"), rig.read("attest.sig"));
    let devid = certified_key(&ak, &public, &msg, &sig_bytes).unwrap();
    assert_eq!(devid.name(), key.name());
    assert!(matches!(
        certified_key(&ek, &public, &msg, &sig_bytes),
        Err(DevIdError::CertifyNotSignedByAk(_))
    ));
    // The AK is a P-256 signing key bound to the TPM too, but not the key certified.
    let e = certified_key(&ak, &rig.read("ak.pub"), &msg, &sig_bytes).unwrap_err();
    assert_eq!(e, DevIdError::OtherKeyCertified);
    assert_eq!(e.rule(), "DevID certify");
    assert!(matches!(
        certified_key(&ak, &rig.read("ek.pub"), &msg, &sig_bytes),
        Err(DevIdError::KeyAlgorithm)
    ));
}
