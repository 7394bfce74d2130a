//! The agent SVID key against a real (software) TPM: a restricted signing key that signs
//! arbitrary messages through a TPM2_Hash ticket, certified by the AK, kept as blobs that
//! load again on a new connection and only on this TPM.
//! Run: `cargo nextest run -p ironroot-tpm --features device -E 'test(device_agent_key::)'`.

use std::process::Command;

use crate::device_support::{ok, public, run, tpm_key, Rig};
use ironroot_testkit::swtpm::{SwtpmOptions, SwtpmState};
use ironroot_tpm::device::{
    tpm_key_csr, DeviceError, EkAlgorithm, KeyBlobs, Tpm, TransientUsage, MAX_SIGNED_MESSAGE,
};
use ironroot_tpm::verify::agent_key::{
    check_agent_key, check_agent_key_certify, AgentKeyError, AGENT_KEY_TEMPLATE_ATTRIBUTES,
};
use ironroot_tpm::verify::TpmPublic;
use p256::ecdsa::signature::Verifier;

const AK_HANDLE: u32 = 0x8100_0100;

fn assert_clean(tpm: &mut Tpm) {
    assert_eq!(ok(tpm.transient_usage()), TransientUsage::default());
}

fn verifying_key(public_tpm2b: &[u8]) -> p256::ecdsa::VerifyingKey {
    let point = [&[4u8][..], &tpm_key(public_tpm2b)].concat();
    ok(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point))
}

/// A TLS 1.3 client CertificateVerify content (RFC 8446, 4.4.3) over a transcript hash.
fn tls13_certificate_verify_content() -> Vec<u8> {
    let mut m = vec![0x20u8; 64];
    m.extend_from_slice(b"TLS 1.3, client CertificateVerify");
    m.push(0);
    m.extend_from_slice(&[0xab; 32]);
    m
}

#[test]
fn the_key_is_restricted_signing_and_signs_messages_through_a_hash_ticket() {
    let mut rig = Rig::new();
    let blobs = ok(rig.tpm.create_agent_key());
    let key = ok(rig.tpm.load_agent_key(&blobs));
    assert_eq!(key.public, blobs.public);
    assert_eq!(key.handle(), None, "not persisted: no NV room used");
    let a = public(&key.public).object_attributes();
    assert!(a.restricted() && a.sign_encrypt() && !a.decrypt());
    assert!(a.fixed_tpm() && a.fixed_parent() && a.sensitive_data_origin());
    assert!(
        a.no_da(),
        "an empty-auth key must not be locked out by power losses"
    );
    assert_eq!(
        u32::from(a),
        AGENT_KEY_TEMPLATE_ATTRIBUTES.bits(),
        "exactly the template's attributes"
    );
    let vk = verifying_key(&key.public);
    for msg in [
        tls13_certificate_verify_content(),
        vec![0x30; MAX_SIGNED_MESSAGE],
        vec![0x01],
    ] {
        let rs = ok(rig.tpm.sign_message(&key, &msg));
        let sig = ok(p256::ecdsa::Signature::from_slice(&rs));
        ok(vk.verify(&msg, &sig));
    }
    assert_clean(&mut rig.tpm);

    // Restricted for real: a digest made outside the TPM (no ticket) is refused by the TPM.
    let e = rig.tpm.sign_digest(&key, &[0x11; 32]).unwrap_err();
    assert_eq!(e.tpm_operation(), Some("Sign"), "{e}");
    // What could pass for a TPM attestation is refused before the TPM is asked.
    let e = rig
        .tpm
        .sign_message(&key, &[0xff, 0x54, 0x43, 0x47, 0x80, 0x17])
        .unwrap_err();
    assert!(
        matches!(&e, DeviceError::InvalidArgument { .. })
            && e.to_string().contains("TPM_GENERATED_VALUE"),
        "{e}"
    );
    let e = rig
        .tpm
        .sign_message(&key, &vec![0x30; MAX_SIGNED_MESSAGE + 1])
        .unwrap_err();
    assert!(e.to_string().contains("at most 1024"), "{e}");
    assert_clean(&mut rig.tpm);
}

#[test]
fn the_csr_is_signed_in_the_tpm_and_the_ak_certifies_the_key() {
    let mut rig = Rig::new();
    let key = {
        let blobs = ok(rig.tpm.create_agent_key());
        ok(rig.tpm.load_agent_key(&blobs))
    };
    let csr = ok(tpm_key_csr(&mut rig.tpm, &key, "ironroot-agent"));
    let file = rig.path("agent.csr");
    ok(std::fs::write(&file, &csr));
    let out = run(Command::new("openssl")
        .args(["req", "-inform", "DER", "-verify", "-noout", "-in"])
        .arg(&file));
    assert!(out.contains("verify OK"), "{out}");

    let ek = ok(rig.tpm.endorsement_key(EkAlgorithm::Rsa2048));
    let ak = ok(rig.tpm.attestation_key(&ek, Some(AK_HANDLE)));
    let ak_public = ok(TpmPublic::from_tpm2b(&ak.public));
    let nonce = [0x42u8; 32];
    let (attest, sig) = ok(rig.tpm.certify(&key, &ak, &nonce));
    // The server's checks pass on what the TPM made: the CSR's key is the certified key.
    let csr_spki = {
        use der::{Decode, Encode};
        let req = ok(x509_cert::request::CertReq::from_der(&csr));
        ok(req.info.public_key.to_der())
    };
    let presented = ok(check_agent_key(&key.public, &csr_spki));
    ok(check_agent_key_certify(
        &ak_public, &presented, &nonce, &attest, &sig,
    ));
    assert!(matches!(
        check_agent_key_certify(&ak_public, &presented, &[0u8; 32], &attest, &sig),
        Err(AgentKeyError::Nonce { .. })
    ));
    assert_clean(&mut rig.tpm);
}

#[test]
fn blobs_load_again_on_a_new_connection_but_not_when_altered_or_on_another_tpm() {
    let mut rig = Rig::new();
    let blobs = ok(rig.tpm.create_agent_key());
    let first = ok(rig.tpm.load_agent_key(&blobs));
    // An agent restart: a new ESYS context, the storage parent made again from its
    // template, the same key.
    let mut rig = rig.reopen();
    let again = ok(rig.tpm.load_agent_key(&blobs));
    assert_eq!(again.name, first.name);
    ok(rig.tpm.sign_message(&again, b"after a restart"));

    // A flipped bit in the wrapped private area: the TPM's integrity check refuses it.
    let mut bad = blobs.clone();
    let n = bad.private.len();
    bad.private[n - 1] ^= 1;
    let e = rig.tpm.load_agent_key(&bad).unwrap_err();
    assert_eq!(e.tpm_operation(), Some("Load (agent key)"), "{e}");
    // A public area that is not an agent key's shape is refused before the TPM sees it.
    let devid_like = KeyBlobs {
        public: ok(rig.tpm.devid_key(0x8100_0200)).public,
        private: blobs.private.clone(),
    };
    let e = rig.tpm.load_agent_key(&devid_like).unwrap_err();
    assert!(e.to_string().contains("restricted"), "{e}");
    assert_clean(&mut rig.tpm);
    drop(rig);

    // Another TPM (its own owner seed) cannot unwrap the private area.
    let other = SwtpmState::shared("device-tests-other", &SwtpmOptions::with_banks("sha256"));
    let swtpm = other.spawn();
    let mut tpm = ok(Tpm::open(&swtpm.tcti()));
    let e = tpm.load_agent_key(&blobs).unwrap_err();
    assert_eq!(e.tpm_operation(), Some("Load (agent key)"), "{e}");
    assert_clean(&mut tpm);
}
