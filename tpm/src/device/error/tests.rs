use tss_esapi::constants::response_code::Tss2ResponseCode;

use super::*;

fn tss(rc: u32) -> tss_esapi::Error {
    tss_esapi::Error::Tss2Error(Tss2ResponseCode::from(rc))
}

#[test]
fn tss_layer_codes_get_layer_name_and_value() {
    assert_eq!(
        describe(&tss(0x000a_000a)),
        "TCTI layer: I/O error (0xa000a)"
    );
    assert_eq!(
        describe(&tss(0x0007_001a)),
        "ESYS layer: more than one encrypt session (0x7001a)"
    );
}

#[test]
fn tpm_codes_keep_tss_esapi_text_and_name_the_command() {
    // TPM_RC_INTEGRITY on parameter 1 (format one).
    let e = DeviceError::tpm("ActivateCredential")(tss(0x0000_01df));
    let text = e.to_string();
    assert!(
        text.starts_with("TPM2_ActivateCredential failed: "),
        "{text}"
    );
    assert!(text.contains("integrity"), "{text}");
    assert_eq!(e.tpm_operation(), Some("ActivateCredential"));
}
