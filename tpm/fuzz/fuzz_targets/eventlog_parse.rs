//! Any bytes: parsing must return Ok or Err, never panic, hang or allocate wildly; a parsed
//! log must replay, check, extract, generate a policy and evaluate it without panicking, and
//! must pass the policy generated from it.
#![no_main]

use ironroot_tpm::verify::eventlog::{EventLog, HashAlg, ParseOptions};
use ironroot_tpm::verify::policy::{evaluate, generate_policy, Policy};
use libfuzzer_sys::fuzz_target;

fn exercise(log: &EventLog) {
    let replay = log.replay();
    for bank in replay.banks() {
        for pcr in 0..25 {
            let _ = bank.expected(pcr);
        }
    }
    for f in log.digest_findings() {
        let _ = f.to_string();
    }
    let state = log.boot_state(HashAlg::Sha256);
    for v in state
        .pk
        .iter()
        .chain(&state.db)
        .chain(&state.dbx)
        .chain(&state.authorities)
    {
        let _ = v.signature_entries();
        let _ = v.certificate_der();
    }
    let policy = generate_policy("fuzz", log);
    if let Err(v) = evaluate(&policy, log) {
        panic!("a log fails the policy generated from it: {v:?}");
    }
    // A policy with no rule (a log without a computable bank) is refused at load.
    if policy.validate().is_ok() {
        if let Ok(text) = policy.to_toml() {
            assert_eq!(Policy::from_toml(&text).as_ref(), Ok(&policy));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match EventLog::parse(data) {
        Ok(log) => exercise(&log),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let ccel = ParseOptions {
        ccel: true,
        ..ParseOptions::default()
    };
    if let Ok(log) = EventLog::parse_with(data, &ccel) {
        exercise(&log);
    }
});
