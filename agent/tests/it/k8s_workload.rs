//! The `k8s` workload attestor against the kubelet stand-in (HTTPS, its own CA, the real
//! PodList JSON) and a proc tree of the test's own (`<root>/123/cgroup` as a kubelet's
//! containerd writes it): the honest pod's selectors, a pod list shared by lookups and
//! fetched once for concurrent ones, a container not listed (looked for again, then no
//! selectors), a pod that appears on the second look, the kubelet's CA mismatch and a
//! rejected credential (errors, never an empty answer), client-certificate authentication,
//! and the explicit `skip_kubelet_verification`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironroot_agent::workload::attestor::k8s::{K8sAttestor, K8sConfig};
use ironroot_testkit::kube::{pod_list_json, Auth, ContainerFixture, KubeStandIn, PodFixture};

const PID: i32 = 123;
const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";
const ID: &str = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";
const KUBELET_TOKEN: &str = "spire-agent-kubelet-token";

fn blog() -> PodFixture {
    PodFixture {
        namespace: "default".into(),
        name: "blog-24ck7".into(),
        uid: UID.into(),
        service_account: "blog".into(),
        node_name: "k8s-node-1".into(),
        labels: vec![("k8s-app".into(), "blog".into())],
        owners: vec![(
            "ReplicaSet".into(),
            "blog-7d9f".into(),
            "2c401175-b29f-11e7-9350-020968147796".into(),
        )],
        containers: vec![ContainerFixture::new(
            "blog",
            "localhost/spiffe/blog:latest",
            ID,
        )],
        init_containers: vec![],
    }
}

/// A proc tree whose process 123 is in the blog pod's container (systemd + containerd, v2).
fn proc_root(dir: &Path, cgroup: &str) -> PathBuf {
    let root = dir.join("proc");
    std::fs::create_dir_all(root.join(PID.to_string())).unwrap();
    std::fs::write(root.join(PID.to_string()).join("cgroup"), cgroup).unwrap();
    root
}

fn in_pod() -> String {
    format!(
        "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/\
         cri-containerd-{ID}.scope\n",
        UID.replace('-', "_")
    )
}

struct Rig {
    kube: KubeStandIn,
    dir: tempfile::TempDir,
}

fn rig(auth: Auth) -> Rig {
    let kube = KubeStandIn::start(auth);
    kube.set_pod_lists(vec![pod_list_json(&[blog()])]);
    Rig {
        kube,
        dir: tempfile::tempdir().unwrap(),
    }
}

impl Rig {
    /// The attestor's config: the stand-in's port and CA, a token file holding `token`, and
    /// `extra` TOML lines.
    fn config(&self, token: &str, extra: &str) -> K8sConfig {
        let token_path = self.dir.path().join("token");
        std::fs::write(&token_path, format!("{token}\n")).unwrap();
        let port = self.kube.url.rsplit(':').next().unwrap();
        toml::from_str(&format!(
            "kubelet_secure_port = {port}\nkubelet_ca_path = \"{}\"\ntoken_path = \"{}\"\n\
             poll_retry_interval = \"100ms\"\nkubelet_timeout = \"5s\"\n{extra}",
            self.kube.ca.display(),
            token_path.display()
        ))
        .expect("k8s config")
    }

    fn attestor(&self, cfg: &K8sConfig, cgroup: &str) -> K8sAttestor {
        K8sAttestor::with_host(cfg, "127.0.0.1")
            .expect("attestor")
            .with_proc_root(proc_root(self.dir.path(), cgroup))
    }
}

fn expected() -> Vec<String> {
    let digest = "0cfdaced91cb46dd7af48309799a3c351e4ca2d5e1ee9737ca0cbd932cb79898";
    vec![
        "sa:blog".to_owned(),
        "ns:default".into(),
        "node-name:k8s-node-1".into(),
        format!("pod-uid:{UID}"),
        "pod-name:blog-24ck7".into(),
        "pod-image-count:1".into(),
        "pod-init-image-count:0".into(),
        "pod-image:localhost/spiffe/blog:latest".into(),
        format!("pod-image:localhost/spiffe/blog@sha256:{digest}"),
        "pod-label:k8s-app:blog".into(),
        "pod-owner:ReplicaSet:blog-7d9f".into(),
        "pod-owner-uid:ReplicaSet:2c401175-b29f-11e7-9350-020968147796".into(),
        "container-name:blog".into(),
        "container-image:localhost/spiffe/blog:latest".into(),
        format!("container-image:localhost/spiffe/blog@sha256:{digest}"),
    ]
}

#[test]
fn the_honest_pod_gets_spire_s_selectors_from_one_shared_pod_list() {
    let rig = rig(Auth::Bearer(KUBELET_TOKEN.into()));
    let mut cfg = rig.config(KUBELET_TOKEN, "");
    cfg.poll_retry_interval = std::time::Duration::from_secs(30);
    let attestor = Arc::new(rig.attestor(&cfg, &in_pod()));
    // Eight callers at once: one request to the kubelet.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let a = attestor.clone();
            std::thread::spawn(move || a.attest_pid(PID))
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap().expect("attested"), expected());
    }
    assert_eq!(rig.kube.count("GET /pods"), 1, "{:?}", rig.kube.requests());
    // Within poll_retry_interval the list is reused.
    assert_eq!(attestor.attest_pid(PID).expect("attested"), expected());
    assert_eq!(rig.kube.count("GET /pods"), 1);
    // A process in no container: no selectors, no request.
    let host = rig.attestor(&cfg, "0::/user.slice/user-1000.slice/session-2.scope\n");
    assert_eq!(
        host.attest_pid(PID).expect("attested"),
        Vec::<String>::new()
    );
    assert_eq!(rig.kube.count("GET /pods"), 1);
}

#[test]
fn a_container_no_pod_lists_is_looked_for_once_more_then_gets_no_selectors() {
    let rig = rig(Auth::Bearer(KUBELET_TOKEN.into()));
    let cfg = rig.config(KUBELET_TOKEN, "");
    let other = format!("0::/kubepods/besteffort/pod{UID}/{}\n", "e".repeat(64));
    let unknown = rig.attestor(&cfg, &other);
    assert_eq!(
        unknown.attest_pid(PID).expect("attested"),
        Vec::<String>::new()
    );
    assert_eq!(rig.kube.count("GET /pods"), 2, "{:?}", rig.kube.requests());

    // A pod that is not listed yet on the first look, listed on the second.
    let rig = self::rig(Auth::Bearer(KUBELET_TOKEN.into()));
    rig.kube
        .set_pod_lists(vec![pod_list_json(&[]), pod_list_json(&[blog()])]);
    let cfg = rig.config(KUBELET_TOKEN, "");
    let a = rig.attestor(&cfg, &in_pod());
    assert_eq!(a.attest_pid(PID).expect("attested"), expected());
    assert_eq!(rig.kube.count("GET /pods"), 2);
}

#[test]
fn a_kubelet_not_verified_or_refusing_the_credential_is_an_error_naming_the_option() {
    let rig = rig(Auth::Bearer(KUBELET_TOKEN.into()));
    let mut cfg = rig.config(KUBELET_TOKEN, "");
    cfg.kubelet_ca_path = rig.kube.other_ca.clone();
    let e = rig
        .attestor(&cfg, &in_pod())
        .attest_pid(PID)
        .expect_err("a kubelet whose certificate does not chain to kubelet_ca_path is refused")
        .to_string();
    assert!(
        e.contains("k8s attestor unavailable")
            && e.contains("TLS handshake")
            && e.contains("kubelet_ca_path"),
        "{e}"
    );
    assert_eq!(
        rig.kube.count("GET /pods"),
        0,
        "no request after a refused handshake"
    );

    let cfg = rig.config("someone-else", "");
    let e = rig
        .attestor(&cfg, &in_pod())
        .attest_pid(PID)
        .expect_err("a rejected token is an error")
        .to_string();
    assert!(e.contains("HTTP 401") && e.contains("token_path"), "{e}");

    // Only an explicit skip_kubelet_verification accepts the unverified kubelet.
    let mut cfg = rig.config(KUBELET_TOKEN, "skip_kubelet_verification = true\n");
    cfg.kubelet_ca_path = rig.kube.other_ca.clone();
    assert_eq!(
        rig.attestor(&cfg, &in_pod())
            .attest_pid(PID)
            .expect("attested"),
        expected()
    );
}

#[test]
fn a_client_certificate_authenticates_to_the_kubelet() {
    let rig = rig(Auth::ClientCert);
    let cfg = rig.config(
        "unused",
        &format!(
            "certificate_path = \"{}\"\nprivate_key_path = \"{}\"\n",
            rig.kube.client_cert.cert.display(),
            rig.kube.client_cert.key.display()
        ),
    );
    assert_eq!(
        rig.attestor(&cfg, &in_pod())
            .attest_pid(PID)
            .expect("attested"),
        expected()
    );
    // The bearer token alone is not what this kubelet accepts.
    let cfg = rig.config(KUBELET_TOKEN, "");
    let e = rig
        .attestor(&cfg, &in_pod())
        .attest_pid(PID)
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401"), "{e}");
    // Half a client certificate is refused at start-up.
    let half = rig.config(
        "unused",
        &format!(
            "certificate_path = \"{}\"\n",
            rig.kube.client_cert.cert.display()
        ),
    );
    let e = K8sAttestor::with_host(&half, "127.0.0.1")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("certificate_path and private_key_path go together"),
        "{e}"
    );
}
