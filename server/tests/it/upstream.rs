//! The server as an intermediate CA under an upstream: a CA given as PEM
//! files, and a CA whose key sits in a second PKCS#11 token.

use std::process::Command;
use std::sync::Arc;

use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::{SoftHsm, MODULE};
use ironroot_testkit::svid::{
    assert_svid_leaf, is_ca, not_after, now, openssl_verify, parse, webpki_verify,
};

const ID: &str = "spiffe://example.org/workload/api";

fn check_intermediate_chain(
    dir: &std::path::Path,
    server: &ServerProcess,
    upstream_pem: &std::path::Path,
) {
    let out = dir.join("out");
    server.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        ID,
        "--write",
        out.to_str().unwrap(),
    ]);
    let chain = pem_ders(&std::fs::read_to_string(out.join("svid.pem")).unwrap());
    let roots = pem_ders(&std::fs::read_to_string(out.join("bundle.pem")).unwrap());
    let upstream_roots = pem_ders(&std::fs::read_to_string(upstream_pem).unwrap());
    assert_eq!(
        roots, upstream_roots,
        "the bundle publishes the upstream root"
    );
    assert_eq!(chain.len(), 2, "leaf then our intermediate");
    assert_svid_leaf(&chain[0], ID);
    assert!(is_ca(&chain[1]));
    assert!(
        not_after(&parse(&chain[1])) <= not_after(&parse(&roots[0])),
        "intermediate outlives upstream"
    );
    webpki_verify(&chain, &roots, now()).expect("chain verifies to the upstream root");
    let (ok, text) = openssl_verify(
        upstream_pem,
        Some(&out.join("svid.pem")),
        &out.join("svid.pem"),
    );
    assert!(ok, "openssl: {text}");
    // Without the intermediate the leaf alone does not verify.
    assert!(webpki_verify(&chain[..1], &roots, now()).is_err());
}

#[test]
fn intermediate_under_an_upstream_ca_in_files() {
    let dir = tempfile::tempdir().unwrap();
    let up_key = dir.path().join("up.key");
    let up_pem = dir.path().join("up.pem");
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .arg("-keyout")
        .arg(&up_key)
        .arg("-out")
        .arg(&up_pem)
        .args(["-days", "1", "-subj", "/O=Upstream Org/CN=upstream root"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .output()
        .unwrap();
    assert!(st.status.success(), "{st:?}");
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    // ca_ttl longer than the upstream's life: the intermediate is cut to it.
    let extra = format!(
        "[ca]\nca_ttl = \"48h\"\n\n[upstream]\nkind = \"disk\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        up_pem.display(),
        up_key.display()
    );
    let conf = server_config(dir.path(), &hsm, "ca", &extra);
    let server = ServerProcess::start("upstream_disk", &conf, &hsm, &dir.path().join("admin.sock"));
    check_intermediate_chain(dir.path(), &server, &up_pem);

    // A key that does not match the upstream certificate: refused at start.
    let other_key = dir.path().join("other.key");
    let st = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
        ])
        .arg(&other_key)
        .output()
        .unwrap();
    assert!(st.status.success());
    drop(server);
    let dir2 = tempfile::tempdir().unwrap();
    let hsm2 = SoftHsm::new(&dir2.path().join("hsm"));
    hsm2.init_token("ca");
    let extra = format!(
        "[upstream]\nkind = \"disk\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        up_pem.display(),
        other_key.display()
    );
    let conf = server_config(dir2.path(), &hsm2, "ca", &extra);
    let mut s = ServerProcess::spawn(
        "upstream_disk_wrong_key",
        &conf,
        &hsm2,
        &dir2.path().join("admin.sock"),
    );
    let (status, log) = s.wait_exit(std::time::Duration::from_secs(30));
    assert!(!status.success());
    assert!(log.contains("does not match"), "{log}");
}

#[test]
fn intermediate_under_an_upstream_key_in_a_second_token() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    hsm.init_token("upstream");

    // Make the upstream root in the second token (this test process only).
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    let km: Arc<dyn ironroot_hsm::KeyManager> = Arc::new(
        ironroot_hsm::Pkcs11KeyManager::open(&ironroot_hsm::Pkcs11Config {
            module: MODULE.into(),
            token_label: "upstream".into(),
            pin: ironroot_hsm::PinSource::File(hsm.pin_file.clone()),
            sessions: 1,
        })
        .unwrap(),
    );
    let info = km
        .generate("root", ironroot_hsm::KeyAlgorithm::EcP256)
        .unwrap();
    let key =
        ironroot_server::ca::signing_key::HsmKey::new(ironroot_hsm::Signer::new(km.clone(), info))
            .unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "upstream HSM root");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    let root = params.self_signed(&key).unwrap();
    drop(key);
    drop(km);
    let up_pem = dir.path().join("up.pem");
    std::fs::write(&up_pem, root.pem()).unwrap();

    let extra = format!(
        "[upstream]\nkind = \"pkcs11\"\nmodule = \"{MODULE}\"\ntoken_label = \"upstream\"\npin_file = \"{}\"\nkey_label = \"root\"\ncert_file = \"{}\"\n",
        hsm.pin_file.display(),
        up_pem.display()
    );
    let conf = server_config(dir.path(), &hsm, "ca", &extra);
    let server = ServerProcess::start(
        "upstream_pkcs11",
        &conf,
        &hsm,
        &dir.path().join("admin.sock"),
    );
    let h: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["healthcheck", "--output", "json"])).unwrap();
    assert!(h["key_manager"].as_str().unwrap().contains("'ca'"), "{h}");
    check_intermediate_chain(dir.path(), &server, &up_pem);
    // The upstream key stayed in its token: sensitive, never extractable.
    let objs = hsm.pkcs11_tool("upstream", &["--list-objects", "--type", "privkey"]);
    assert!(
        objs.contains("root") && objs.contains("never extractable"),
        "{objs}"
    );
}
