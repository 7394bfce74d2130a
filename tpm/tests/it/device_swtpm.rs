//! `ironroot_tpm::device` against a real (software) TPM: each test runs its own swtpm on a
//! copy of one manufactured state with EK certificates from a private local CA.
//! Run: `cargo nextest run -p ironroot-tpm --features device`.

use std::process::Command;

use crate::device_support::{cert_key, contains, ok, public, run, tpm_key, verify_chain, Rig};
use ironroot_testkit::fixtures::fixtures_dir;
use ironroot_testkit::tpm2_tools;
use ironroot_tpm::device::{
    devid_csr, read_event_log, AkAlgorithm, DeviceError, EkAlgorithm, Tpm, TransientUsage,
};
use ironroot_tpm::verify;
use ironroot_tpm::verify::HashAlg;
use sha2::{Digest, Sha256};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::Public as TssPublic;

const AK_HANDLE: u32 = 0x8100_0100;
const DEVID_HANDLE: u32 = 0x8100_0200;
const SECRET: &[u8] = b"ironroot credential secret 32by!";

fn assert_clean(rig: &mut Rig) {
    assert_eq!(ok(rig.tpm.transient_usage()), TransientUsage::default());
}

fn ek_test(alg: EkAlgorithm, handle: u32, name: &str) {
    let mut rig = Rig::new();
    let ek = ok(rig.tpm.endorsement_key(alg));
    assert_eq!(ek.handle(), Some(handle), "swtpm_setup persists its EKs");
    let cert = ek
        .certificate
        .clone()
        .expect("swtpm_setup wrote an EK certificate");
    assert_eq!(
        cert_key(&cert),
        tpm_key(&ek.public),
        "certificate key = EK public"
    );
    verify_chain(&rig, &cert, name);
    // A second call is served from the cache and gives the same key.
    assert_eq!(ok(rig.tpm.endorsement_key(alg)).public, ek.public);
    assert_clean(&mut rig);
}

#[test]
fn ek_rsa_matches_its_certificate_which_chains_to_the_local_ca() {
    ek_test(EkAlgorithm::Rsa2048, 0x8101_0001, "ek-rsa");
}

#[test]
fn ek_ecc_p384_matches_its_certificate_which_chains_to_the_local_ca() {
    ek_test(EkAlgorithm::EccP384, 0x8101_0016, "ek-p384");
}

#[test]
fn ek_ecc_p256_is_made_from_the_template_and_has_no_certificate_on_swtpm() {
    let mut rig = Rig::new();
    let ek = ok(rig.tpm.endorsement_key(EkAlgorithm::EccP256));
    assert_eq!(ek.handle(), None);
    assert!(ek.certificate.is_none());
    let TssPublic::Ecc { parameters, .. } = public(&ek.public) else {
        panic!("not ECC")
    };
    assert_eq!(parameters.ecc_curve(), EccCurve::NistP256);
    // The saved context loads again: an AK can be made under it.
    ok(rig.tpm.attestation_key(&ek, None));
    assert_clean(&mut rig);
}

#[test]
fn ak_is_restricted_signing_and_a_persisted_one_is_reused() {
    let mut rig = Rig::new();
    let ek = ok(rig.tpm.endorsement_key(EkAlgorithm::Rsa2048));
    let ak = ok(rig.tpm.attestation_key(&ek, Some(AK_HANDLE)));
    assert_eq!(ak.handle(), Some(AK_HANDLE));
    let p = public(&ak.public);
    let a = p.object_attributes();
    assert!(a.restricted() && a.sign_encrypt() && a.fixed_tpm() && a.fixed_parent());
    assert!(!a.decrypt());
    assert!(
        a.no_da(),
        "an empty-auth AK must not be locked out by power losses"
    );
    assert!(matches!(p, TssPublic::Ecc { .. }), "ECC by default");
    assert_eq!(ak.name[..2], [0x00, 0x0b], "SHA-256 name");

    let again = ok(rig.tpm.attestation_key(&ek, Some(AK_HANDLE)));
    assert_eq!(
        (again.name.clone(), again.public.clone()),
        (ak.name.clone(), ak.public.clone())
    );
    // Also after the agent restarts (a new ESYS context): the key lives in the TPM.
    let mut rig = rig.reopen();
    let ek = ok(rig.tpm.endorsement_key(EkAlgorithm::Rsa2048));
    assert_eq!(
        ok(rig.tpm.attestation_key(&ek, Some(AK_HANDLE))).name,
        ak.name
    );

    // The persisted AK is the RSA EK's: asking for it under the P-384 EK is refused.
    let ek384 = ok(rig.tpm.endorsement_key(EkAlgorithm::EccP384));
    let e = rig
        .tpm
        .attestation_key(&ek384, Some(AK_HANDLE))
        .unwrap_err();
    assert!(e.to_string().contains("another endorsement key"), "{e}");

    let transient = ok(rig.tpm.attestation_key(&ek, None));
    assert_eq!(transient.handle(), None);
    assert_ne!(transient.name, ak.name);
    let rsa = ok(rig
        .tpm
        .attestation_key_with(&ek, AkAlgorithm::Rsa2048, None));
    assert!(matches!(public(&rsa.public), TssPublic::Rsa { .. }));
    let e = rig.tpm.attestation_key(&ek, Some(0x4000_0001)).unwrap_err();
    assert!(matches!(e, DeviceError::InvalidArgument { .. }), "{e}");
    assert_clean(&mut rig);
}

#[test]
fn quote_reports_the_pcrs_it_signed_and_carries_the_nonce() {
    let mut rig = Rig::new();
    let ek = ok(rig.tpm.endorsement_key(EkAlgorithm::Rsa2048));
    let ak = ok(rig.tpm.attestation_key(&ek, None));
    // 13 PCRs: more than one PCR_Read (8 digests at most); banks not in TPM order.
    let sel = vec![
        (HashAlg::Sha256, (0..11).rev().collect()),
        (HashAlg::Sha1, vec![7, 0]),
    ];
    let nonce1 = b"nonce-one-0123456789abcdef";
    let q1 = ok(rig.tpm.quote(&ak, nonce1, &sel));
    assert!(!q1.attest.is_empty() && !q1.signature.is_empty());
    assert_eq!(q1.pcrs.len(), 13);
    let read256 = ok(rig
        .tpm
        .pcr_read(HashAlg::Sha256, &(0..11).collect::<Vec<_>>()));
    let read1 = ok(rig.tpm.pcr_read(HashAlg::Sha1, &[0, 7]));
    assert_eq!(
        q1.pcrs,
        [read256, read1].concat(),
        "values in selection order"
    );
    assert!(
        contains(&q1.attest, nonce1),
        "nonce is the attest's extraData"
    );
    let concat: Vec<u8> = q1.pcrs.iter().flat_map(|v| v.digest.clone()).collect();
    assert!(
        contains(&q1.attest, &Sha256::digest(&concat)),
        "pcrDigest over the values"
    );

    let nonce2 = b"nonce-two-0123456789abcdef";
    let q2 = ok(rig.tpm.quote(&ak, nonce2, &sel));
    assert_ne!(q1.attest, q2.attest);
    assert!(contains(&q2.attest, nonce2) && !contains(&q2.attest, nonce1));

    let e = rig.tpm.quote(&ak, &[0u8; 65], &sel).unwrap_err();
    assert!(e.to_string().contains("Quote: invalid argument"), "{e}");
    let e = rig
        .tpm
        .quote(&ak, nonce1, &[(HashAlg::Sha256, vec![24])])
        .unwrap_err();
    assert!(e.to_string().contains("not below 24"), "{e}");
    assert_clean(&mut rig);
}

#[test]
fn quote_and_certify_verify_with_the_pure_rust_verifier() {
    let mut rig = Rig::new();
    let ek = ok(rig.tpm.endorsement_key(EkAlgorithm::EccP384));
    for alg in [AkAlgorithm::EccP256, AkAlgorithm::Rsa2048] {
        let ak = ok(rig.tpm.attestation_key_with(&ek, alg, None));
        let ak_pub = ok(verify::TpmPublic::from_tpm2b(&ak.public));
        ok(ak_pub.ensure_attestation_key());
        assert_eq!(ak_pub.name(), ak.name);
        let q = ok(rig
            .tpm
            .quote(&ak, b"verifier nonce", &[(HashAlg::Sha256, vec![0, 7])]));
        let sig = ok(verify::TpmSignature::parse(&q.signature));
        ok(verify::verify_signature(&ak_pub, &q.attest, &sig));
        let values: Vec<&[u8]> = q.pcrs.iter().map(|v| v.digest.as_slice()).collect();
        ok(ok(verify::Attest::parse(&q.attest)).check_quote(b"verifier nonce", sig.hash, &values));

        let devid = ok(rig.tpm.devid_key(DEVID_HANDLE));
        let (attest, sig) = ok(rig.tpm.certify(&devid, &ak, b"certify nonce"));
        let sig = ok(verify::TpmSignature::parse(&sig));
        ok(verify::verify_signature(&ak_pub, &attest, &sig));
        let attest = ok(verify::Attest::parse(&attest));
        assert_eq!(attest.extra_data, b"certify nonce");
        let verify::Attested::Certify { name, .. } = attest.attested else {
            panic!("not a certify")
        };
        assert_eq!(name, devid.name);
    }
    assert_clean(&mut rig);
}

fn activate_test(alg: EkAlgorithm) {
    let mut rig = Rig::new();
    let ek = ok(rig.tpm.endorsement_key(alg));
    let ak = ok(rig.tpm.attestation_key(&ek, None));
    let dir = rig.swtpm.scratch_dir().to_path_buf();

    let (id, secret) = tpm2_tools::make_credential(&dir, &ek.public, &ak.name, SECRET);
    assert_eq!(
        ok(rig.tpm.activate_credential(&ak, &ek, &id, &secret)),
        SECRET
    );

    // The verifier's own MakeCredential, as the server will use it.
    let made = ok(verify::make_credential(
        &ok(verify::TpmPublic::from_tpm2b(&ek.public)),
        &ak.name,
        SECRET,
    ));
    let got = rig
        .tpm
        .activate_credential(&ak, &ek, &made.id_object, &made.encrypted_secret);
    assert_eq!(ok(got), SECRET);

    // Made for another key's name: the TPM refuses to release it.
    let other = ok(rig.tpm.attestation_key(&ek, None));
    let (id, secret) = tpm2_tools::make_credential(&dir, &ek.public, &other.name, SECRET);
    let e = rig
        .tpm
        .activate_credential(&ak, &ek, &id, &secret)
        .unwrap_err();
    assert_eq!(e.tpm_operation(), Some("ActivateCredential"), "{e}");
    assert!(
        e.to_string().contains("TPM2_ActivateCredential failed"),
        "{e}"
    );
    assert_clean(&mut rig);
}

#[test]
fn activate_credential_with_rsa_ek() {
    activate_test(EkAlgorithm::Rsa2048);
}

#[test]
fn activate_credential_with_ecc_p384_ek() {
    activate_test(EkAlgorithm::EccP384);
}

#[test]
fn devid_is_certified_by_the_ak_signs_and_makes_a_valid_csr() {
    let mut rig = Rig::new();
    let devid = ok(rig.tpm.devid_key(DEVID_HANDLE));
    assert_eq!(devid.handle(), Some(DEVID_HANDLE));
    let p = public(&devid.public);
    let a = p.object_attributes();
    assert!(a.sign_encrypt() && a.fixed_tpm() && a.fixed_parent() && a.user_with_auth());
    assert!(!a.restricted() && !a.decrypt());
    assert!(
        a.no_da(),
        "an empty-auth DevID key must not be locked out by power losses"
    );
    assert_eq!(
        ok(rig.tpm.devid_key(DEVID_HANDLE)).name,
        devid.name,
        "reused"
    );

    let ek = ok(rig.tpm.endorsement_key(EkAlgorithm::Rsa2048));
    let ak = ok(rig.tpm.attestation_key(&ek, Some(AK_HANDLE)));
    let (attest, sig) = ok(rig.tpm.certify(&devid, &ak, b"certify-nonce"));
    assert!(contains(&attest, &devid.name) && contains(&attest, b"certify-nonce"));
    assert!(!sig.is_empty());
    // The AK's handle is no DevID: refused, not overwritten.
    let e = rig.tpm.devid_key(AK_HANDLE).unwrap_err();
    assert!(e.to_string().contains("not a DevID"), "{e}");

    // sign_digest: raw r||s that verifies with the DevID's public key.
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let point = [&[4u8][..], &tpm_key(&devid.public)].concat();
    let vk = ok(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point));
    let digest = Sha256::digest(b"server nonce");
    let rs = ok(rig.tpm.sign_digest(&devid, &digest));
    assert_eq!(rs.len(), 64);
    ok(vk.verify_prehash(&digest, &ok(p256::ecdsa::Signature::from_slice(&rs))));
    let e = rig.tpm.sign_digest(&devid, b"short").unwrap_err();
    assert!(e.to_string().contains("Sign: invalid argument"), "{e}");

    // The CSR: PKCS#10, self-signature valid (openssl), subject and key as asked.
    let csr = ok(devid_csr(&mut rig.tpm, &devid, "node-7.edge.example"));
    let csr_file = rig.path("devid.csr");
    ok(std::fs::write(&csr_file, &csr));
    let out = run(Command::new("openssl")
        .args([
            "req", "-inform", "DER", "-verify", "-noout", "-subject", "-in",
        ])
        .arg(&csr_file));
    assert!(
        out.contains("verify OK") || out.contains("Certificate request self-signature verify OK"),
        "{out}"
    );
    assert!(
        out.contains("CN = node-7.edge.example") || out.contains("CN=node-7.edge.example"),
        "{out}"
    );
    assert!(contains(&csr, &point), "the CSR carries the DevID key");
    assert!(devid_csr(&mut rig.tpm, &devid, "").is_err());
    assert_clean(&mut rig);
}

#[test]
fn pcr_extend_changes_every_active_bank() {
    let mut rig = Rig::new();
    let data = b"ironroot test measurement";
    let before256 = ok(rig.tpm.pcr_read(HashAlg::Sha256, &[16]))[0]
        .digest
        .clone();
    let before1 = ok(rig.tpm.pcr_read(HashAlg::Sha1, &[16]))[0].digest.clone();
    ok(rig.tpm.pcr_extend(16, data));
    let after256 = ok(rig.tpm.pcr_read(HashAlg::Sha256, &[16]))[0]
        .digest
        .clone();
    let after1 = ok(rig.tpm.pcr_read(HashAlg::Sha1, &[16]))[0].digest.clone();
    let expect256 = Sha256::digest([before256.as_slice(), &Sha256::digest(data)].concat());
    assert_eq!(after256, expect256.to_vec());
    use sha1::Sha1;
    let expect1 = Sha1::digest([before1.as_slice(), &Sha1::digest(data)].concat());
    assert_eq!(after1, expect1.to_vec());
    let e = rig.tpm.pcr_extend(24, data).unwrap_err();
    assert!(
        e.to_string().contains("PCR_Extend: invalid argument"),
        "{e}"
    );
}

#[test]
fn read_event_log_reads_the_ovmf_fixture_and_names_a_missing_file() {
    let fixture = fixtures_dir().join("ovmf-qemu/eventlog.bin");
    if fixture.is_file() {
        assert_eq!(ok(read_event_log(&fixture)), ok(std::fs::read(&fixture)));
    } else if std::env::var_os("CI").is_some() {
        panic!("{} missing (set IRONROOT_FIXTURES)", fixture.display());
    } else {
        println!("NOT RUN (fixture part): {} missing", fixture.display());
    }
    let dir = ok(tempfile::tempdir());
    let missing = dir.path().join("binary_bios_measurements");
    let e = read_event_log(&missing).unwrap_err();
    assert!(matches!(e, DeviceError::EventLog { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&*missing.to_string_lossy()) && text.contains("not found"),
        "{text}"
    );

    ok(std::fs::write(&missing, b""));
    assert!(read_event_log(&missing)
        .unwrap_err()
        .to_string()
        .contains("is empty"));
    let big = ok(std::fs::File::create(&missing));
    ok(big.set_len(4 * 1024 * 1024 + 1));
    let e = read_event_log(&missing).unwrap_err();
    assert!(e.to_string().contains("4 MiB cap"), "{e}");
}

#[test]
fn open_names_the_tcti_when_the_tpm_is_not_there() {
    let port = ok(std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr())).port();
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let e = Tpm::open(&tcti).unwrap_err();
    assert!(matches!(e, DeviceError::Open { .. }), "{e}");
    assert!(e.to_string().contains(&tcti), "{e}");
    let e = Tpm::open("swtmp:host=127.0.0.1").unwrap_err();
    assert!(e.to_string().contains("unknown TCTI"), "{e}");
}
