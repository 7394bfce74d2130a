//! Any bytes as an audit log (split into up to three files at fuzzer-chosen
//! points): verify answers with a report or a named break, never a panic.
#![no_main]

use ironroot_audit::{verify_log, LogFile, VerifyOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cuts, log) = data.split_at(data.len().min(2));
    let a = cuts.first().map_or(0, |c| usize::from(*c)).min(log.len());
    let b = cuts.get(1).map_or(0, |c| usize::from(*c) * 4).clamp(a, log.len());
    let files = [
        LogFile { name: "a", bytes: &log[..a] },
        LogFile { name: "b", bytes: &log[a..b] },
        LogFile { name: "c", bytes: &log[b..] },
    ];
    let _ = verify_log(&files, &VerifyOptions::default());
    let _ = verify_log(
        &files,
        &VerifyOptions {
            allow_pruned_start: true,
            expected_head: Some((3, ironroot_audit::RecordHash([1; 32]))),
            public_key: Some(log.to_vec()),
        },
    );
});
