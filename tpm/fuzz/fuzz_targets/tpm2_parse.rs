//! Every TPM structure the server parses from an agent: TPM2B_PUBLIC (EK, AK,
//! DevID), TPMS_ATTEST (quote, certify) and TPMT_SIGNATURE. Hostile bytes must
//! give an error, never a panic; whatever parses must survive the follow-up
//! calls the server makes (name, SPKI, signature check, MakeCredential).
#![no_main]

use ironroot_tpm::verify::{make_credential, verify_signature, Attest, TpmPublic, TpmSignature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Split the input three ways so one run can combine a key, an attest and a signature.
    let a = data.len() / 3;
    let (k, rest) = data.split_at(a);
    let (att, sig) = rest.split_at(rest.len() / 2);
    let key = TpmPublic::from_tpm2b(k).ok();
    let _ = TpmPublic::from_tpmt(data);
    let _ = Attest::parse(att);
    let _ = Attest::parse(data);
    let parsed_sig = TpmSignature::parse(sig).ok();
    let _ = TpmSignature::parse(data);
    if let Some(key) = key {
        let name = key.name();
        let _ = key.spki_der();
        if let Some(s) = &parsed_sig {
            let _ = verify_signature(&key, att, s);
        }
        let _ = make_credential(&key, &name, b"0123456789abcdef");
    }
});
