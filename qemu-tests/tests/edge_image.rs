//! The edge image booted by real OVMF firmware with a swtpm TPM: the firmware, not a test,
//! writes the event log the server judges. One boot answers what it can (the golden boot's
//! attestation also proves the TPM-resident agent key and enrolls the DevID that the next
//! boot of the same machine uses). Each case prints where its serial logs are.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ironroot_qemu_tests::{wait_until, Boot, Case, EdgeServer, Guest, TRUST_DOMAIN};
use ironroot_testkit::server::{pem_ders, server_bin};
use ironroot_testkit::svid;

/// From QEMU's start to the server's verdict. A boot takes ~20 s on an idle 2-core
/// machine; `make test` runs the other suites beside it.
const VERDICT: Duration = Duration::from_secs(300);

fn workload_id() -> String {
    format!("spiffe://{TRUST_DOMAIN}/edge/demo-workload")
}

/// Waits for the server's first verdict on this boot: the attested agent's JSON, or
/// panics with the rejection.
fn wait_attested(server: &EdgeServer, guest: &mut Guest, attestor: &str) -> serde_json::Value {
    let agent = wait_until(
        VERDICT,
        &format!("a {attestor} attestation"),
        || {
            if let Some(r) = server.rejections().first() {
                panic!("the boot was rejected: {r}");
            }
            assert!(guest.running(), "the guest stopped before attesting");
            let exits = guest.console().matches("ironroot-agent exited").count();
            assert!(exits < 3, "the agent keeps exiting before it attests");
            server
                .agents()
                .into_iter()
                .find(|a| a["attestor"] == attestor)
        },
        || server.log_tail(),
    );
    println!(
        "attested as {} after {} s",
        agent["spiffe_id"],
        guest.elapsed().as_secs()
    );
    agent
}

/// Waits for the server's first verdict on this boot and returns the rejection's log line;
/// panics if the boot attested.
fn wait_rejected(server: &EdgeServer, guest: &mut Guest) -> String {
    let reason = wait_until(
        VERDICT,
        "a rejected attestation",
        || {
            if let Some(a) = server.attestations().first() {
                panic!("the boot attested, it must not: {a}");
            }
            assert!(guest.running(), "the guest stopped before attesting");
            server.rejections().into_iter().next()
        },
        || server.log_tail(),
    );
    println!("rejected after {} s: {reason}", guest.elapsed().as_secs());
    reason
}

fn selectors(agent: &serde_json::Value) -> Vec<String> {
    agent["selectors"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The workload's SVID as the guest wrote it on its disk, checked on the host: the SPIFFE
/// ID, every field the X.509-SVID spec fixes, and the chain up to the server's bundle.
fn check_workload_svid(server: &EdgeServer, disk: &Path) {
    let pem = std::fs::read_to_string(disk.join("demo-workload/svid.pem"))
        .expect("the workload's svid.pem on the machine's disk");
    let chain = pem_ders(&pem);
    assert!(!chain.is_empty(), "svid.pem holds no certificate");
    svid::assert_svid_leaf(&chain[0], &workload_id());
    let roots = pem_ders(&server.bundle_pem());
    svid::webpki_verify(&chain, &roots, svid::now())
        .unwrap_or_else(|e| panic!("the workload's SVID does not chain to the bundle: {e}"));
    // and not to another CA
    let other = ironroot_testkit::svid::webpki_verify(&chain, &[chain[0].clone()], svid::now());
    assert!(other.is_err(), "the chain check accepts any root");
}

/// Cases 1, 7 and 6: the golden boot attests with tpm_ek, its agent key is TPM-resident,
/// its workload gets an X.509-SVID checked on the host; it enrolled an LDevID, and the
/// next boot of the same machine attests with tpm_devid.
#[test]
fn golden_boot_attests_with_tpm_ek_then_the_next_boot_with_its_devid() {
    let case = Case::new("golden-boot");
    let server = case.server("edge-gateway", "");
    let machine = case.machine("machine");

    let mut guest = machine.boot(&Boot::of(&case.fixture.image), &case.dir.join("boot-1"));
    let agent = wait_attested(&server, &mut guest, "tpm_ek");
    let agent_id = agent["spiffe_id"].as_str().expect("agent ID").to_owned();
    assert!(
        agent_id.starts_with(&format!("spiffe://{TRUST_DOMAIN}/spire/agent/tpm_ek/")),
        "{agent_id}"
    );
    let sel = selectors(&agent);
    // case 7: the server signed the agent SVID for a key the AK certified in the TPM
    assert!(sel.contains(&"tpm:agent_key:tpm".to_string()), "{sel:?}");
    assert!(
        sel.contains(&"tpm:boot_policy:edge-gateway".to_string()),
        "{sel:?}"
    );
    server.register_root_workload(&workload_id(), &agent_id, 0);
    let line = guest.wait_console("ironroot-workload: got X.509-SVID", VERDICT);
    assert!(line.contains(&workload_id()), "{line}");
    check_workload_svid(&server, &machine.disk());
    let devid = machine.disk().join("agent/devid.pem");
    assert!(
        devid.is_file(),
        "the tpm_ek attestation enrolled no LDevID ({})",
        devid.display()
    );
    guest.stop();

    // case 6: same TPM, same disk: the DevID key and its LDevID
    std::fs::remove_dir_all(machine.disk().join("demo-workload")).expect("old SVID");
    let mut guest = machine.boot(&Boot::of(&case.fixture.image), &case.dir.join("boot-2"));
    guest.wait_console("node attestor tpm_devid", VERDICT);
    let agent = wait_attested(&server, &mut guest, "tpm_devid");
    let devid_agent = agent["spiffe_id"].as_str().expect("agent ID").to_owned();
    assert!(
        devid_agent.starts_with(&format!("spiffe://{TRUST_DOMAIN}/spire/agent/tpm_devid/")),
        "{devid_agent}"
    );
    assert!(
        selectors(&agent).contains(&"tpm:agent_key:tpm".to_string()),
        "{agent}"
    );
    server.register_root_workload(&workload_id(), &devid_agent, 0);
    guest.wait_console("ironroot-workload: got X.509-SVID", VERDICT);
    check_workload_svid(&server, &machine.disk());
}

/// Case 2: one more word on the kernel command line changes PCR 9's LoadOptions event.
#[test]
fn changed_kernel_command_line_is_rejected_naming_pcr9() {
    let case = Case::new("changed-cmdline");
    let server = case.server("edge-gateway", "");
    let machine = case.machine("machine");
    let mut boot = Boot::of(&case.fixture.image);
    boot.args.push("init_on_free=0".into());
    let mut guest = machine.boot(&boot, &case.dir.join("boot"));
    let reason = wait_rejected(&server, &mut guest);
    assert!(reason.contains("PCR9"), "{reason}");
    assert!(
        reason.contains("LoadOptions") || reason.contains("command line"),
        "the rejection does not name the command line event: {reason}"
    );
    assert!(server.agents().is_empty());
}

/// Case 3: an initrd with one more file: PCR 9's initrd digest and (QEMU writes the
/// initrd's size into the kernel header) PCR 4's kernel digest change.
#[test]
fn changed_initrd_is_rejected_naming_the_initrd_and_kernel_events() {
    let case = Case::new("changed-initrd");
    let f = case.fixture;
    let overlay = case.dir.join("overlay");
    ironroot_qemu_tests::copy_dir(
        &ironroot_qemu_tests::workspace_root().join("qemu-tests/overlay"),
        &overlay,
    );
    std::fs::write(overlay.join("etc/ironroot/added-after-golden"), "x\n").expect("file");
    let image = case.dir.join("image");
    let status = Command::new("bash")
        .arg(ironroot_qemu_tests::workspace_root().join("images/build.sh"))
        .env("IMAGE_OUT", &image)
        .env(
            "IRONROOT_AGENT",
            server_bin().with_file_name("ironroot-agent"),
        )
        .env("IRONROOT_BUNDLE", f.run_dir.join("fixture/bundle.pem"))
        .env("IRONROOT_SERVER", format!("10.0.2.2:{}", f.port))
        .env("IRONROOT_TRUST_DOMAIN", TRUST_DOMAIN)
        .env("IRONROOT_ENROLL_DEVID", "1")
        .env("IRONROOT_OVERLAY", &overlay)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("build.sh");
    assert!(status.success(), "images/build.sh: {status}");

    let server = case.server("edge-gateway", "");
    let machine = case.machine("machine");
    let mut guest = machine.boot(&Boot::of(&image), &case.dir.join("boot"));
    let reason = wait_rejected(&server, &mut guest);
    assert!(
        reason.contains("initrd"),
        "the rejection does not name the initrd: {reason}"
    );
    assert!(
        reason.contains("PCR4") && reason.contains("EV_EFI_BOOT_SERVICES_APPLICATION"),
        "the rejection does not name the kernel's PCR 4 event: {reason}"
    );
}

/// Case 4a: a policy that requires Secure Boot rejects the image booted with it off.
#[test]
fn secure_boot_policy_rejects_a_boot_with_secure_boot_off() {
    let case = Case::new("secure-boot-off");
    let server = case.server("secure-boot", "");
    let machine = case.machine("machine");
    let mut guest = machine.boot(&Boot::of(&case.fixture.image), &case.dir.join("boot"));
    let reason = wait_rejected(&server, &mut guest);
    assert!(reason.contains("require_secure_boot"), "{reason}");
    assert!(reason.contains("SecureBoot is 0"), "{reason}");
}

/// Case 4b: with Secure Boot on and a kernel db does not verify (QEMU's header patch breaks
/// its signature; here it is not signed at all), OVMF boots it through its legacy fallback:
/// SecureBoot=1, but no authority event and no kernel event. Rejected.
#[test]
fn secure_boot_policy_rejects_ovmf_silent_fallback() {
    let case = Case::new("secure-boot-fallback");
    let server = case.server("secure-boot", "");
    let machine = case.machine("machine");
    let mut boot = Boot::of(&case.fixture.image);
    boot.secure_boot = true;
    let mut guest = machine.boot(&boot, &case.dir.join("boot"));
    let reason = wait_rejected(&server, &mut guest);
    assert!(reason.contains("require_secure_boot"), "{reason}");
    assert!(
        reason.contains("no EV_EFI_VARIABLE_AUTHORITY"),
        "the rejection does not say no image was verified: {reason}"
    );
    assert!(
        !reason.contains("SecureBoot is 0"),
        "the fallback boot reads SecureBoot=1: {reason}"
    );
}

/// Case 4c: the kernel pre-patched as QEMU patches it and signed with the snakeoil db key:
/// a genuinely verified boot passes the same policy.
#[test]
fn verified_secure_boot_passes_the_secure_boot_policy() {
    let case = Case::new("secure-boot-verified");
    let f = case.fixture;
    // the golden boot measured the kernel as QEMU patched it: sign-kernel.sh checks that
    // its pre-patched image has that Authenticode digest
    let out = Command::new(server_bin())
        .args(["eventlog", "show", "--output", "json"])
        .arg(&f.golden_log)
        .output()
        .expect("eventlog show");
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).expect("eventlog json");
    let kernel_digest = log["events"]
        .as_array()
        .and_then(|evs| {
            evs.iter()
                .find(|e| e["pcr"] == 4 && e["type"] == "EV_EFI_BOOT_SERVICES_APPLICATION")
        })
        .and_then(|e| e["digests"]["sha256"].as_str())
        .expect("the golden boot's PCR 4 kernel event")
        .to_owned();
    let signed = case.dir.join("vmlinuz.signed");
    let out = Command::new("bash")
        .arg(ironroot_qemu_tests::workspace_root().join("images/sign-kernel.sh"))
        .arg(f.image.join("vmlinuz"))
        .arg(f.image.join("initrd.img"))
        .arg(&signed)
        .arg(&kernel_digest)
        .output()
        .expect("sign-kernel.sh");
    assert!(
        out.status.success(),
        "sign-kernel.sh: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let server = case.server("secure-boot", "");
    let machine = case.machine("machine");
    let mut boot = Boot::of(&f.image);
    boot.secure_boot = true;
    boot.kernel = Some(signed);
    let mut guest = machine.boot(&boot, &case.dir.join("boot"));
    let agent = wait_attested(&server, &mut guest, "tpm_ek");
    let sel = selectors(&agent);
    assert!(
        sel.contains(&"tpm:secure_boot:enabled".to_string()),
        "{sel:?}"
    );
    assert!(
        sel.contains(&"tpm:boot_policy:secure-boot".to_string()),
        "{sel:?}"
    );
}

/// Case 5: continuous attestation. After the golden boot attested, the running guest's
/// PCRs are extended (measurements the firmware log does not hold); the agent's renewal
/// (a fresh quote at half its SVID's life) is rejected, its SVID is not renewed, and
/// neither is the workload's once the agent's has expired.
#[test]
fn pcr_extended_after_attestation_fails_the_renewal() {
    let case = Case::new("continuous-attestation");
    let agent_ttl = 40;
    let workload_ttl = 30;
    let server = EdgeServer::start(
        &case,
        "edge-gateway",
        "",
        &format!("agent_svid_ttl = \"{agent_ttl}s\""),
    );
    let machine = case.machine("machine");
    let hook = machine.disk().join("qemu-tests");
    std::fs::create_dir_all(&hook).expect("hook dir");
    std::fs::write(hook.join("extend-pcrs"), "").expect("trigger");

    let mut guest = machine.boot(&Boot::of(&case.fixture.image), &case.dir.join("boot"));
    let agent = wait_attested(&server, &mut guest, "tpm_ek");
    let agent_id = agent["spiffe_id"].as_str().expect("agent ID").to_owned();
    let agent_expiry = agent["expires_at"].as_i64().expect("expires_at") as u64;
    server.register_root_workload(&workload_id(), &agent_id, workload_ttl);
    guest.wait_console("qemu-tests: PCRs extended after attestation", VERDICT);

    // the renewal at half life quotes the extended PCRs: the replay no longer matches
    let reason = wait_until(
        Duration::from_secs(agent_ttl + 60),
        "the renewal's rejection",
        || server.rejections().into_iter().next(),
        || server.log_tail(),
    );
    println!("renewal rejected: {reason}");
    assert!(
        reason.contains("event log replay") && reason.contains("PCR 8"),
        "the rejection does not name the replay of the extended PCR 8: {reason}"
    );

    // past the agent SVID's expiry and a workload SVID's half life: a healthy agent would
    // have rotated the workload's SVID by then
    let until = agent_expiry + u64::from(workload_ttl) / 2 + 10;
    while svid::now() < until {
        assert!(guest.running(), "the guest stopped");
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        server.attestations().len(),
        1,
        "the node attested again after its PCRs changed"
    );
    let agents = server.agents();
    assert_eq!(
        agents[0]["expires_at"].as_i64(),
        Some(agent_expiry as i64),
        "the agent SVID was renewed"
    );
    let served: Vec<u64> = (1..)
        .map(|n| hook.join(format!("svid-{n}.pem")))
        .take_while(|p| p.is_file())
        .map(|p| {
            let der = pem_ders(&std::fs::read_to_string(&p).expect("svid"))[0].clone();
            let c = svid::parse(&der);
            c.tbs_certificate
                .validity
                .not_before
                .to_unix_duration()
                .as_secs()
        })
        .collect();
    assert!(!served.is_empty(), "the workload never got an SVID");
    let newest = *served.iter().max().expect("served");
    assert!(
        newest < agent_expiry,
        "a workload SVID issued at {newest}, after the agent's identity lapsed at {agent_expiry}"
    );
    assert!(
        svid::now() > newest + u64::from(workload_ttl) / 2,
        "the check ran before the newest SVID's half life"
    );
}
