use super::*;
use crate::verify::agent_key::check_agent_key;

#[test]
fn the_template_is_what_the_server_requires() {
    let template = agent_key_template().map_err(|e| e.to_string()).unwrap();
    let a = template.object_attributes();
    assert!(a.restricted() && a.sign_encrypt() && !a.decrypt());
    assert!(a.fixed_tpm() && a.fixed_parent() && a.sensitive_data_origin());
    // With a point filled in (the TPM's job), the verifier's shape check passes.
    let mut bytes = tpm2b_public(&template).unwrap();
    // unique: two empty TPM2B_ECC_PARAMETER at the end; give them a real P-256 point.
    bytes.truncate(bytes.len() - 4);
    let sk = p256::SecretKey::from_slice(&[3u8; 32]).unwrap();
    let point =
        p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&sk.public_key(), false);
    for coord in [point.x().unwrap(), point.y().unwrap()] {
        bytes.extend(32u16.to_be_bytes());
        bytes.extend(&coord[..]);
    }
    let size = u16::try_from(bytes.len() - 2).unwrap();
    bytes[..2].copy_from_slice(&size.to_be_bytes());
    let parsed = TpmPublic::from_tpm2b(&bytes).unwrap();
    check_agent_key(&bytes, &parsed.spki_der().unwrap()).unwrap();
}

#[test]
fn private_blobs_round_trip_and_bad_ones_are_named() {
    let p = Private::try_from(vec![7u8; 40]).unwrap();
    let bytes = tpm2b_private(&p).unwrap();
    assert_eq!(&bytes[..2], &[0, 40]);
    assert_eq!(parse_tpm2b_private(&bytes).unwrap().value(), p.value());
    for bad in [&bytes[..1], &bytes[..30]] {
        let e = parse_tpm2b_private(bad).unwrap_err();
        assert!(e.to_string().contains("TPM2B_PRIVATE"), "{e}");
    }
}
