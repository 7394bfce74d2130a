//! The server as an intermediate CA under OpenBao's PKI engine (`[upstream] kind =
//! "openbao"`): the real server binary on a SoftHSM token, a real `bao server -dev` with a PKI
//! mount and its own root, under the least-privilege policy of docs/vault.md. An X.509-SVID
//! verifies with the real `openssl verify` against OpenBao's root (`pki/cert/ca`); the bundle
//! publishes that root; while OpenBao is sealed the rotation step fails, named, the current CA
//! keeps signing and no key is left behind; once unsealed the next key gets its certificate
//! and chains to the same root.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ironroot_testkit::openbao::OpenBao;
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;
use ironroot_testkit::svid::{assert_svid_leaf, is_ca, now, openssl_verify, webpki_verify};
use ironroot_testkit::wait_until;

const ID: &str = "spiffe://example.org/workload/under-openbao";

/// The ```hcl block of docs/vault.md's section on the PKI upstream.
fn documented_pki_policy() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vault.md"))
        .expect("docs/vault.md");
    let section = doc
        .find("## OpenBao PKI as the upstream CA")
        .expect("the PKI upstream section");
    let start = section + doc[section..].find("```hcl\n").expect("an ```hcl block") + 7;
    let len = doc[start..].find("```").expect("closed block");
    doc[start..start + len].to_owned()
}

fn pem(der: &[u8]) -> String {
    ::pem::encode(&::pem::Pem::new("CERTIFICATE", der.to_vec()))
}

/// Mints an X.509-SVID into `dir` and checks it with `openssl verify` against OpenBao's root
/// (`root_pem`), the intermediate given as untrusted; returns the chain (leaf, intermediate).
fn mint_and_openssl_verify(server: &ServerProcess, dir: &Path, root_pem: &Path) -> Vec<Vec<u8>> {
    let chain = server.mint_x509(ID, dir);
    assert_eq!(chain.len(), 2, "leaf then our intermediate");
    assert_svid_leaf(&chain[0], ID);
    assert!(is_ca(&chain[1]));
    let leaf = dir.join("leaf.pem");
    let inter = dir.join("intermediate.pem");
    std::fs::write(&leaf, pem(&chain[0])).unwrap();
    std::fs::write(&inter, pem(&chain[1])).unwrap();
    let (ok, text) = openssl_verify(root_pem, Some(&inter), &leaf);
    assert!(ok, "openssl verify against OpenBao's root: {text}");
    // The leaf alone does not verify: the intermediate is what OpenBao signed.
    let (ok, _) = openssl_verify(root_pem, None, &leaf);
    assert!(!ok, "the leaf verified without the intermediate");
    chain
}

/// The X.509 CA keys in the token (the JWT and audit checkpoint keys left out).
fn x509_ca_keys(hsm: &SoftHsm) -> usize {
    hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"])
        .lines()
        .filter(|l| l.contains("label:") && l.contains("-x509-"))
        .count()
}

#[test]
fn upstream_openbao_pki_signs_the_ca_and_rotation_survives_a_sealed_openbao() {
    let Some(bao) = OpenBao::start_or_skip() else {
        return;
    };
    bao.bao(&["secrets", "enable", "pki"]);
    bao.bao(&["secrets", "tune", "-max-lease-ttl=87600h", "pki"]);
    bao.bao(&[
        "write",
        "pki/root/generate/internal",
        "common_name=OpenBao test root",
        "ttl=87600h",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let root_pem = dir.path().join("openbao-root.pem");
    std::fs::write(
        &root_pem,
        bao.bao(&["read", "-field=certificate", "pki/cert/ca"]),
    )
    .unwrap();
    let root = pem_ders(&std::fs::read_to_string(&root_pem).unwrap());
    assert_eq!(root.len(), 1);

    bao.write_policy("ironroot-upstream", &documented_pki_policy());
    let token_file = dir.path().join("bao-token");
    std::fs::write(&token_file, bao.create_token(&["ironroot-upstream"], "1h")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();

    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    // Pinned to another root first: the server does not start, and says why.
    let stranger = dir.path().join("stranger-root.pem");
    std::fs::write(
        &stranger,
        rcgen::generate_simple_self_signed(vec!["stranger".to_string()])
            .unwrap()
            .cert
            .pem(),
    )
    .unwrap();
    let extra = |pinned: &Path| {
        format!(
            "[ca]\nca_ttl = \"60s\"\nrotation_check_interval = \"300ms\"\n\n\
             [upstream]\nkind = \"openbao\"\naddress = \"{}\"\ninsecure_http = true\n\
             token_file = \"{}\"\nroot_file = \"{}\"\n",
            bao.address(),
            token_file.display(),
            pinned.display()
        )
    };
    let conf = server_config(dir.path(), &hsm, "ca", &extra(&stranger));
    let mut refused = ServerProcess::spawn(
        "upstream_openbao_wrong_pin",
        &conf,
        &hsm,
        &dir.path().join("admin.sock"),
    );
    let (status, output) = refused.wait_exit(Duration::from_secs(60));
    assert!(
        !status.success(),
        "started under an unpinned root:\n{output}"
    );
    assert!(output.contains("upstream.root_file"), "{output}");
    assert_eq!(
        x509_ca_keys(&hsm),
        0,
        "the refused certification left no key"
    );

    // Pinned to the mount's root: everything below runs with the pin in force.
    let conf = server_config(dir.path(), &hsm, "ca", &extra(&root_pem));
    let server = ServerProcess::start(
        "upstream_openbao",
        &conf,
        &hsm,
        &dir.path().join("admin.sock"),
    );

    // The bundle publishes OpenBao's root, not our intermediate.
    assert_eq!(server.bundle_roots(), root, "the bundle is OpenBao's root");
    let first = server.health()["active_x509_authority"]
        .as_str()
        .unwrap()
        .to_owned();
    let chain_a = mint_and_openssl_verify(&server, &dir.path().join("a"), &root_pem);
    webpki_verify(&chain_a, &root, now()).expect("chain verifies to OpenBao's root");

    // Sealed when the next key needs its certificate: the step fails, named, and retries.
    assert_eq!(x509_ca_keys(&hsm), 1);
    bao.seal();
    wait_until(
        "a rotation check to fail on the sealed OpenBao",
        Duration::from_secs(90),
        || server.log_tail(),
        || {
            let h = server.health().to_string();
            h.contains("did not sign the new CA certificate") && h.contains("sealed")
        },
    );
    // Several failed checks later: the current CA still signs, and no key was left behind.
    std::thread::sleep(Duration::from_secs(2));
    let h = server.health();
    assert_eq!(h["active_x509_authority"].as_str().unwrap(), first, "{h}");
    let chain_sealed = mint_and_openssl_verify(&server, &dir.path().join("sealed"), &root_pem);
    assert_eq!(chain_sealed[1], chain_a[1], "the current CA keeps signing");
    // A check may be between making a key and destroying it; none stays.
    wait_until(
        "a failed certification to leave no key in the token",
        Duration::from_secs(10),
        || format!("{} X.509 CA keys", x509_ca_keys(&hsm)),
        || x509_ca_keys(&hsm) == 1,
    );

    // Unsealed: the next key is certified by OpenBao and takes over.
    bao.unseal();
    wait_until(
        "the next CA key, certified by OpenBao, to become active",
        Duration::from_secs(120),
        || server.log_tail(),
        || server.health()["active_x509_authority"].as_str() != Some(first.as_str()),
    );
    let chain_b = mint_and_openssl_verify(&server, &dir.path().join("b"), &root_pem);
    assert_ne!(
        chain_b[1], chain_a[1],
        "a new intermediate after the rotation"
    );
    webpki_verify(&chain_b, &root, now()).expect("the new chain verifies to OpenBao's root");
    assert_eq!(
        server.bundle_roots(),
        root,
        "both CA keys chain to one root, published once"
    );
}
