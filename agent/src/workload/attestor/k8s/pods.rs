//! The caller's pod in the kubelet's pod list, and SPIRE's `k8s` selectors for it. Pure:
//! the list is the JSON body of `GET /pods`.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::cgroup::PodContainer;

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Pod {
    metadata: Metadata,
    spec: Spec,
    status: Status,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    #[serde(rename = "ownerReferences")]
    owner_references: Vec<OwnerReference>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OwnerReference {
    kind: String,
    name: String,
    uid: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Spec {
    #[serde(rename = "serviceAccountName")]
    service_account_name: String,
    #[serde(rename = "nodeName")]
    node_name: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    #[serde(rename = "containerStatuses")]
    container_statuses: Vec<ContainerStatus>,
    #[serde(rename = "initContainerStatuses")]
    init_container_statuses: Vec<ContainerStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ContainerStatus {
    name: String,
    image: String,
    #[serde(rename = "imageID")]
    image_id: String,
    #[serde(rename = "containerID")]
    container_id: String,
}

impl ContainerStatus {
    /// `containerd://<id>`, `cri-o://<id>`, `docker://<id>`: the runtime's ID after the scheme.
    fn runtime_id(&self) -> &str {
        self.container_id
            .split_once("://")
            .map_or(self.container_id.as_str(), |(_, id)| id)
    }
}

/// Why the pod list could not be judged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PodListError {
    /// The body is not a PodList.
    #[error("the kubelet's pod list is not a PodList: {0}")]
    Malformed(String),
    /// Two pods list the container (SPIRE refuses this too).
    #[error("two pods ({0} and {1}) list container {2}")]
    TwoPods(String, String, String),
}

/// SPIRE's selector values (without the `k8s:` type) for the pod and container `at` names
/// in `pod_list`, or `None` when no pod lists the container (yet).
pub(crate) fn selectors_for(
    pod_list: &[u8],
    at: &PodContainer,
) -> Result<Option<Vec<String>>, PodListError> {
    let list: PodList =
        serde_json::from_slice(pod_list).map_err(|e| PodListError::Malformed(e.to_string()))?;
    let mut found: Option<(&Pod, &ContainerStatus)> = None;
    for pod in &list.items {
        if pod.metadata.uid.is_empty() {
            continue;
        }
        if at.pod_uid.as_ref().is_some_and(|u| *u != pod.metadata.uid) {
            continue;
        }
        let status = &pod.status;
        let Some(c) = status
            .container_statuses
            .iter()
            .chain(&status.init_container_statuses)
            .find(|c| c.runtime_id() == at.container_id)
        else {
            continue;
        };
        if let Some((seen, _)) = found {
            return Err(PodListError::TwoPods(
                format!("{}/{}", seen.metadata.namespace, seen.metadata.name),
                format!("{}/{}", pod.metadata.namespace, pod.metadata.name),
                at.container_id.clone(),
            ));
        }
        found = Some((pod, c));
    }
    Ok(found.map(|(pod, c)| selectors(pod, c)))
}

fn images(statuses: &[ContainerStatus]) -> BTreeSet<&str> {
    statuses
        .iter()
        .flat_map(|c| [c.image.as_str(), c.image_id.as_str()])
        .filter(|s| !s.is_empty())
        .collect()
}

/// SPIRE's pod selectors, then the container's.
fn selectors(pod: &Pod, c: &ContainerStatus) -> Vec<String> {
    let m = &pod.metadata;
    let st = &pod.status;
    let mut s = vec![
        format!("sa:{}", pod.spec.service_account_name),
        format!("ns:{}", m.namespace),
        format!("node-name:{}", pod.spec.node_name),
        format!("pod-uid:{}", m.uid),
        format!("pod-name:{}", m.name),
        format!("pod-image-count:{}", st.container_statuses.len()),
        format!("pod-init-image-count:{}", st.init_container_statuses.len()),
    ];
    s.extend(
        images(&st.container_statuses)
            .into_iter()
            .map(|i| format!("pod-image:{i}")),
    );
    s.extend(
        images(&st.init_container_statuses)
            .into_iter()
            .map(|i| format!("pod-init-image:{i}")),
    );
    s.extend(m.labels.iter().map(|(k, v)| format!("pod-label:{k}:{v}")));
    for o in &m.owner_references {
        s.push(format!("pod-owner:{}:{}", o.kind, o.name));
        s.push(format!("pod-owner-uid:{}:{}", o.kind, o.uid));
    }
    s.push(format!("container-name:{}", c.name));
    if !c.image.is_empty() {
        s.push(format!("container-image:{}", c.image));
    }
    if !c.image_id.is_empty() {
        s.push(format!("container-image:{}", c.image_id));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_testkit::kube::{pod_list_json, ContainerFixture, PodFixture};

    const BLOG_ID: &str = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";
    const SIDECAR_ID: &str = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1f6";
    const INIT_ID: &str = "5e1b7f0f9c2d4a6b8e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";

    fn blog() -> PodFixture {
        PodFixture {
            namespace: "default".into(),
            name: "blog-24ck7".into(),
            uid: UID.into(),
            service_account: "default".into(),
            node_name: "k8s-node-1".into(),
            labels: vec![
                ("k8s-app".into(), "blog".into()),
                ("version".into(), "v0".into()),
            ],
            owners: vec![(
                "ReplicationController".into(),
                "blog".into(),
                "2c401175-b29f-11e7-9350-020968147796".into(),
            )],
            containers: vec![
                ContainerFixture::new("blog", "localhost/spiffe/blog:latest", BLOG_ID),
                ContainerFixture::new(
                    "ghostunnel",
                    "localhost/spiffe/ghostunnel:latest",
                    SIDECAR_ID,
                ),
            ],
            init_containers: vec![ContainerFixture::new(
                "migrate",
                "localhost/spiffe/blog:latest",
                INIT_ID,
            )],
        }
    }

    fn other() -> PodFixture {
        PodFixture {
            namespace: "kube-system".into(),
            name: "coredns-5d78c9869d-9x2mz".into(),
            uid: "11111111-2222-3333-4444-555555555555".into(),
            service_account: "coredns".into(),
            node_name: "k8s-node-1".into(),
            labels: vec![],
            owners: vec![],
            containers: vec![ContainerFixture::new(
                "coredns",
                "registry.k8s.io/coredns/coredns:v1.10.1",
                "7777777777777777777777777777777777777777777777777777777777777777",
            )],
            init_containers: vec![],
        }
    }

    fn at(pod: Option<&str>, id: &str) -> PodContainer {
        PodContainer {
            pod_uid: pod.map(str::to_owned),
            container_id: id.into(),
        }
    }

    #[test]
    fn the_pod_and_container_selectors_are_spire_s() {
        let list = pod_list_json(&[other(), blog()]);
        let got = selectors_for(list.as_bytes(), &at(Some(UID), BLOG_ID))
            .unwrap()
            .unwrap();
        let digest = "0cfdaced91cb46dd7af48309799a3c351e4ca2d5e1ee9737ca0cbd932cb79898";
        let expected = [
            "sa:default".to_owned(),
            "ns:default".into(),
            "node-name:k8s-node-1".into(),
            format!("pod-uid:{UID}"),
            "pod-name:blog-24ck7".into(),
            "pod-image-count:2".into(),
            "pod-init-image-count:1".into(),
            // A set of images and image IDs, sorted.
            "pod-image:localhost/spiffe/blog:latest".into(),
            format!("pod-image:localhost/spiffe/blog@sha256:{digest}"),
            "pod-image:localhost/spiffe/ghostunnel:latest".into(),
            format!("pod-image:localhost/spiffe/ghostunnel@sha256:{digest}"),
            "pod-init-image:localhost/spiffe/blog:latest".into(),
            format!("pod-init-image:localhost/spiffe/blog@sha256:{digest}"),
            "pod-label:k8s-app:blog".into(),
            "pod-label:version:v0".into(),
            "pod-owner:ReplicationController:blog".into(),
            "pod-owner-uid:ReplicationController:2c401175-b29f-11e7-9350-020968147796".into(),
            "container-name:blog".into(),
            "container-image:localhost/spiffe/blog:latest".into(),
            format!("container-image:localhost/spiffe/blog@sha256:{digest}"),
        ];
        assert_eq!(got, expected);
        // The sidecar: same pod selectors, its own container's.
        let got = selectors_for(list.as_bytes(), &at(None, SIDECAR_ID))
            .unwrap()
            .unwrap();
        assert!(
            got.contains(&"container-name:ghostunnel".to_owned()),
            "{got:?}"
        );
        assert!(!got.contains(&"container-name:blog".to_owned()), "{got:?}");
        // An init container is found too.
        let got = selectors_for(list.as_bytes(), &at(Some(UID), INIT_ID))
            .unwrap()
            .unwrap();
        assert!(
            got.contains(&"container-name:migrate".to_owned()),
            "{got:?}"
        );
    }

    #[test]
    fn a_container_of_another_pod_or_an_unknown_one_is_not_found() {
        let list = pod_list_json(&[other(), blog()]);
        // The cgroup names the blog pod, the container is coredns's: no match.
        let coredns = "7777777777777777777777777777777777777777777777777777777777777777";
        assert_eq!(
            selectors_for(list.as_bytes(), &at(Some(UID), coredns)),
            Ok(None)
        );
        assert_eq!(
            selectors_for(list.as_bytes(), &at(None, &"a".repeat(64))),
            Ok(None)
        );
        assert_eq!(
            selectors_for(pod_list_json(&[]).as_bytes(), &at(None, BLOG_ID)),
            Ok(None)
        );
    }

    #[test]
    fn two_pods_with_one_container_and_a_malformed_list_are_refused() {
        let mut twin = blog();
        twin.uid = "99999999-2222-3333-4444-555555555555".into();
        twin.name = "blog-twin".into();
        let list = pod_list_json(&[blog(), twin]);
        assert!(matches!(
            selectors_for(list.as_bytes(), &at(None, BLOG_ID)),
            Err(PodListError::TwoPods(..))
        ));
        // With the pod UID from the cgroup, only that pod counts.
        assert!(selectors_for(list.as_bytes(), &at(Some(UID), BLOG_ID))
            .unwrap()
            .is_some());
        assert!(matches!(
            selectors_for(b"{\"items\": 3}", &at(None, BLOG_ID)),
            Err(PodListError::Malformed(_))
        ));
    }
}
