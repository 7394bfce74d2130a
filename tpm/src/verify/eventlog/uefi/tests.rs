use super::*;

#[test]
fn guid_text() {
    assert_eq!(
        EFI_GLOBAL_VARIABLE.to_string(),
        "8be4df61-93ca-11d2-aa0d-00e098032b8c"
    );
    assert_eq!(
        EFI_IMAGE_SECURITY_DATABASE.to_string(),
        "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
    );
}

#[test]
fn variable_round_trip_and_hostile_lengths() {
    let enc = encode_variable(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
    let v = parse_variable(&enc).unwrap();
    assert_eq!(v.name, "SecureBoot");
    assert_eq!(v.data, &[1]);
    assert_eq!(v.guid, EFI_GLOBAL_VARIABLE);
    let mut bad = enc.clone();
    bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(parse_variable(&bad), None);
    let mut bad = enc.clone();
    bad[24..32].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    assert_eq!(parse_variable(&bad), None);
    // Trailing bytes after the declared data are allowed.
    let mut extra = enc;
    extra.extend_from_slice(&[9, 9]);
    assert_eq!(parse_variable(&extra).unwrap().data, &[1]);
}

#[test]
fn signature_lists() {
    let mut list = Vec::new();
    list.extend_from_slice(&EFI_CERT_SHA256.0);
    list.extend_from_slice(&(28u32 + 2 * 48).to_le_bytes());
    list.extend_from_slice(&0u32.to_le_bytes());
    list.extend_from_slice(&48u32.to_le_bytes());
    for i in 0..2u8 {
        list.extend_from_slice(&[0xAA; 16]);
        list.extend_from_slice(&[i; 32]);
    }
    let e = parse_signature_lists(&list).unwrap();
    assert_eq!(e.len(), 2);
    assert_eq!(e[1].fingerprint(), [1u8; 32]);
    list[24..28].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(parse_signature_lists(&list), None);
    assert_eq!(parse_signature_lists(&[0u8; 27]), None);
}
