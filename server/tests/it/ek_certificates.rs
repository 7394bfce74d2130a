//! The EK certificates swtpm_setup writes (RSA-2048 and ECC P-384, from its local CA) pass
//! every rule of the EK profile, through the real chain: root anchor, issuer sent as an
//! intermediate. The same certificates are not DevID certificates (no digitalSignature).

use ironroot_server::node::tpm::anchors;
use ironroot_testkit::swtpm::{SwtpmOptions, SwtpmState};
use ironroot_tpm::device::{EkAlgorithm, Tpm};
use ironroot_tpm::verify::certchain::{self, CertProfile, CertRuleError, ChainError};

#[test]
fn swtpm_ek_certificates_pass_the_ek_rules() {
    let state = SwtpmState::shared("ek-rules", &SwtpmOptions::default());
    let tpm = state.spawn();
    let mut t = Tpm::open(&tpm.tcti()).expect("open the swtpm");
    let root = anchors::from_pem_file(&state.ca_root_cert).expect("swtpm local CA root");
    let issuer = ironroot_api::bundle::certificates_from_pem(
        &std::fs::read(&state.issuer_cert).expect("swtpm issuer certificate"),
    )
    .expect("issuer PEM");
    let now = ironroot_runtime::unix_now() as u64;
    for alg in [EkAlgorithm::Rsa2048, EkAlgorithm::EccP384] {
        let ek = t.endorsement_key(alg).expect("EK");
        let cert = ek.certificate.expect("swtpm_setup wrote an EK certificate");
        if let Err(e) = certchain::verify(&cert, &issuer, &root, now, CertProfile::Ek) {
            panic!("swtpm's {alg:?} EK certificate is refused: {e}");
        }
        match certchain::verify(&cert, &issuer, &root, now, CertProfile::DevId) {
            Err(ChainError::Rule(CertRuleError::LeafKeyUsage { required, .. })) => {
                assert_eq!(required, "digitalSignature")
            }
            other => panic!("an EK certificate passed as a DevID: {other:?}"),
        }
    }
}
