//! Boot → attested → workload SVID, wall time under TCG: the edge image booted by OVMF
//! with a swtpm TPM, attesting to a server on the host (release binaries when run by
//! `cargo bench`). The first boot registers the workload and is not counted; every
//! counted boot starts from a wiped disk, so it attests with tpm_ek like a new machine.
//!
//!   cargo build --release -p ironroot-server -p ironroot-agent
//!   cargo bench -p ironroot-qemu-tests --bench boot_to_svid   (IRONROOT_BENCH_BOOTS=3)
//!
//! Columns, from QEMU's start: `event log out` (OVMF and the kernel ran; /init exported
//! the firmware log: the floor no agent can beat), `attested` (the server accepted the
//! node), `workload SVID` (the demo workload holds its X.509-SVID).

use std::time::{Duration, Instant};

use ironroot_qemu_tests::{Boot, Case, TRUST_DOMAIN};

fn main() {
    let boots: usize = std::env::var("IRONROOT_BENCH_BOOTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let case = Case::new("bench-boot-to-svid");
    let server = case.server("edge-gateway", "");
    let machine = case.machine("machine");
    let mut rows: Vec<[f64; 3]> = Vec::new();
    let mut registered = false;
    for i in 0..=boots {
        let _ = std::fs::remove_dir_all(machine.disk());
        let before = server.attestations().len();
        let mut guest = machine.boot(
            &Boot::of(&case.fixture.image),
            &case.dir.join(format!("boot-{i}")),
        );
        let t0 = Instant::now();
        let (mut log_out, mut attested, mut svid) = (None, None, None);
        while svid.is_none() {
            assert!(
                t0.elapsed() < Duration::from_secs(600),
                "boot {i}: no workload SVID within 600 s (logs in {})",
                guest.out.display()
            );
            assert!(guest.running(), "boot {i}: the guest stopped");
            let console = guest.console();
            let now = t0.elapsed().as_secs_f64();
            if log_out.is_none() && console.contains("ironroot-init: event log written to ttyS1") {
                log_out = Some(now);
            }
            if attested.is_none() && server.attestations().len() > before {
                attested = Some(now);
                if !registered {
                    let agent = &server.agents()[0];
                    server.register_root_workload(
                        &format!("spiffe://{TRUST_DOMAIN}/edge/demo-workload"),
                        agent["spiffe_id"].as_str().expect("agent ID"),
                        0,
                    );
                    registered = true;
                }
            }
            if console.contains("ironroot-workload: got X.509-SVID") {
                svid = Some(now);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        guest.stop();
        let row = [
            log_out.unwrap_or(f64::NAN),
            attested.unwrap_or(f64::NAN),
            svid.unwrap_or(f64::NAN),
        ];
        println!(
            "boot {i}{}: event log out {:.1} s, attested {:.1} s, workload SVID {:.1} s",
            if i == 0 {
                " (warm-up, registers the entry)"
            } else {
                ""
            },
            row[0],
            row[1],
            row[2]
        );
        if i > 0 {
            rows.push(row);
        }
    }
    let median = |col: usize| {
        let mut v: Vec<f64> = rows.iter().map(|r| r[col]).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (floor, att, svid) = (median(0), median(1), median(2));
    println!(
        "boot_to_svid ({} boots, median): event log out {floor:.1} s | attested {att:.1} s \
         ({:.2}x the floor, +{:.1} s) | workload SVID {svid:.1} s ({:.2}x the floor, +{:.1} s)",
        rows.len(),
        att / floor,
        att - floor,
        svid / floor,
        svid - floor
    );
}
