//! Parse + replay + policy evaluation timings (no criterion): median and p95 per iteration
//! for the QEMU/OVMF 25-event log (target <= 100 us) and a synthetic 1,000-event log
//! (target <= 2 ms). Run: `cargo bench -p ironroot-tpm --bench eventlog`.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ironroot_tpm::verify::eventlog::uefi::{
    EFI_CERT_SHA256, EFI_CERT_X509, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
};
use ironroot_tpm::verify::eventlog::{utf16_with_nul, EventLog, EventType, HashAlg, LogBuilder};
use ironroot_tpm::verify::policy::{evaluate_state, generate_policy, Policy};

fn signature_list(kind: &[u8; 16], entry: &[u8], n: usize) -> Vec<u8> {
    let size = 16 + entry.len();
    let mut v = kind.to_vec();
    v.extend_from_slice(&((28 + size * n) as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&(size as u32).to_le_bytes());
    for i in 0..n {
        v.extend_from_slice(&[0x11; 16]);
        let mut e = entry.to_vec();
        e[0] = i as u8;
        e[1] = (i >> 8) as u8;
        v.extend_from_slice(&e);
    }
    v
}

/// A 1,000-event sha1+sha256 log shaped like a shim + GRUB boot: firmware blobs, PCR7
/// Secure Boot config (db with certificates, dbx with 300 hashes), authorities, boot
/// applications, GRUB commands and files, EFI stub tags, separators.
fn synthetic() -> Vec<u8> {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    let var = EventType::EV_EFI_VARIABLE_DRIVER_CONFIG;
    let cert = vec![0x30; 1200];
    b.event(0, EventType::EV_S_CRTM_VERSION, b"1.0\0");
    for i in 0..20u8 {
        b.measure(0, EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB, &[i], &[i; 16]);
    }
    b.variable(7, var, &EFI_GLOBAL_VARIABLE, "SecureBoot", &[1])
        .variable(
            7,
            var,
            &EFI_GLOBAL_VARIABLE,
            "PK",
            &signature_list(&EFI_CERT_X509.0, &cert, 1),
        )
        .variable(
            7,
            var,
            &EFI_GLOBAL_VARIABLE,
            "KEK",
            &signature_list(&EFI_CERT_X509.0, &cert, 2),
        )
        .variable(
            7,
            var,
            &EFI_IMAGE_SECURITY_DATABASE,
            "db",
            &signature_list(&EFI_CERT_X509.0, &cert, 3),
        )
        .variable(
            7,
            var,
            &EFI_IMAGE_SECURITY_DATABASE,
            "dbx",
            &signature_list(&EFI_CERT_SHA256.0, &[7; 32], 300),
        )
        .separators(&[7]);
    let mut auth = [0x22u8; 16].to_vec();
    auth.extend_from_slice(&cert);
    for i in 0..30u8 {
        b.measure(2, EventType::EV_EFI_BOOT_SERVICES_DRIVER, &[i], &[i; 60]);
        b.variable(
            7,
            EventType::EV_EFI_VARIABLE_AUTHORITY,
            &EFI_IMAGE_SECURITY_DATABASE,
            "db",
            &auth,
        );
    }
    for i in 0..4u8 {
        b.measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            &[i],
            &[i; 90],
        );
    }
    b.event(
        4,
        EventType::EV_EFI_ACTION,
        b"Calling EFI Application from Boot Option",
    )
    .separators(&[0, 1, 2, 3, 4, 5, 6]);
    // Fill with GRUB commands and module files up to 1,000 events with the 7 below.
    let mut i = 0;
    while b.len() < 1000 - 7 {
        let cmd = format!("set var{i}=value{i} --class gnu-linux --id entry-{i}");
        if i % 2 == 0 {
            let data = format!("grub_cmd: {cmd}\0");
            b.measure(8, EventType::EV_IPL, cmd.as_bytes(), data.as_bytes());
        } else {
            let path = format!("(hd0,gpt2)/grub/mod{i}.mod\0");
            b.measure(9, EventType::EV_IPL, cmd.as_bytes(), path.as_bytes());
        }
        i += 1;
    }
    b.measure(
        8,
        EventType::EV_IPL,
        b"/vmlinuz root=/dev/sda2 ro quiet",
        b"kernel_cmdline: /vmlinuz root=/dev/sda2 ro quiet\0",
    )
    .measure(
        8,
        EventType::EV_IPL,
        b"initrd /initrd.img",
        b"grub_cmd: initrd /initrd.img\0",
    )
    .measure(9, EventType::EV_IPL, b"initrd contents", b"/initrd.img\0")
    .linux_tag(
        0x8F3B_22ED,
        "LOADED_IMAGE::LoadOptions",
        &utf16_with_nul("root=/dev/sda2 ro quiet"),
    )
    .linux_tag(0x8F3B_22EC, "Linux initrd", b"initrd contents")
    .event(
        5,
        EventType::EV_EFI_ACTION,
        b"Exit Boot Services Invocation",
    )
    .event(
        5,
        EventType::EV_EFI_ACTION,
        b"Exit Boot Services Returned with Success",
    );
    assert_eq!(b.len(), 1000);
    b.build()
}

/// Times of one iteration: parse (with digest checks), replay, extraction + evaluation.
fn one(bytes: &[u8], policy: &Policy) -> [Duration; 3] {
    let t0 = Instant::now();
    let log = EventLog::parse(bytes).expect("log parses");
    let t1 = Instant::now();
    let replay = log.replay();
    let t2 = Instant::now();
    let verdict = evaluate_state(policy, &log.boot_state(HashAlg::Sha256), &replay);
    let t3 = Instant::now();
    black_box((log.digest_findings().len(), verdict.is_ok()));
    [t1 - t0, t2 - t1, t3 - t2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn run(label: &str, bytes: &[u8], iters: usize, target: Duration) -> bool {
    let log = EventLog::parse(bytes).expect("log parses");
    let policy = generate_policy("bench", &log);
    assert!(
        evaluate_state(&policy, &log.boot_state(HashAlg::Sha256), &log.replay()).is_ok(),
        "{label}: the generated policy must pass"
    );
    for _ in 0..iters / 10 {
        one(bytes, &policy);
    }
    let mut total = Vec::with_capacity(iters);
    let mut phases: [Vec<Duration>; 3] = Default::default();
    for _ in 0..iters {
        let t = Instant::now();
        let p = one(black_box(bytes), &policy);
        total.push(t.elapsed());
        for (v, d) in phases.iter_mut().zip(p) {
            v.push(d);
        }
    }
    total.sort();
    for v in &mut phases {
        v.sort();
    }
    let (median, p95) = (percentile(&total, 50), percentile(&total, 95));
    let ok = p95 <= target;
    println!(
        "{label}: {} events, {} bytes, {iters} iterations: parse+replay+policy median {:.1} us, p95 {:.1} us (target <= {} us) {}",
        log.events().len(),
        bytes.len(),
        us(median),
        us(p95),
        target.as_micros(),
        if ok { "OK" } else { "OVER TARGET" }
    );
    println!(
        "  medians: parse+digest checks {:.1} us, replay {:.1} us, extract+evaluate {:.1} us",
        us(percentile(&phases[0], 50)),
        us(percentile(&phases[1], 50)),
        us(percentile(&phases[2], 50))
    );
    ok
}

fn main() {
    let dir = std::env::var_os("IRONROOT_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../shared/fixtures"
            ))
        });
    let ovmf = dir.join("ovmf-qemu/eventlog.bin");
    match std::fs::read(&ovmf) {
        Ok(bytes) => {
            run("ovmf-qemu", &bytes, 20_000, Duration::from_micros(100));
        }
        Err(_) => println!(
            "NOT RUN: ovmf-qemu: {} not found (set IRONROOT_FIXTURES)",
            ovmf.display()
        ),
    }
    let synth = synthetic();
    run("synthetic", &synth, 1_000, Duration::from_millis(2));
}
