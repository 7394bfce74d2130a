//! The caller's pod UID and container ID from the text of `/proc/PID/cgroup`, as SPIRE's
//! container locator finds them. Pure: no I/O, any input gives an answer or an error, never
//! a panic (a property test below).
//!
//! Every line is `hierarchy-ID:controller-list:path` (cgroup v1 lines name controllers, the
//! v2 line is `0::<path>`). In each path the segments are read right to left: the first
//! with a 64-hex-digit word is the container ID (the innermost container: kind runs pods in
//! a docker container), and from there leftwards the first with a `pod<UID>` word gives the
//! pod UID (`_` in systemd slice names read as `-`). Forms covered by the tests:
//!
//! | runtime / manager | path |
//! |---|---|
//! | cgroupfs (docker, containerd) | `/kubepods/burstable/pod<uid>/<id>` |
//! | systemd, docker | `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<u_i_d>.slice/docker-<id>.scope` |
//! | systemd, cri-o | `.../kubepods-besteffort-pod<u_i_d>.slice/crio-<id>.scope` |
//! | systemd, containerd | `/kubepods-besteffort-pod<u_i_d>.slice:cri-containerd:<id>` |
//! | cgroup namespace | `/../../../burstable/pod<uid>/<id>` |
//! | kind | `/docker/<outer id>/kubepods/besteffort/pod<uid>/<id>` |
//!
//! Lines must agree: two different container IDs or pod UIDs are refused (a process is in
//! one container); a line with a pod UID completes one without. No container ID at all:
//! the process is not in a pod (no selectors, not an error).

/// Where a process runs: its pod (when the path names it) and container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodContainer {
    /// The pod's UID (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`), if the cgroup path names it.
    pub(crate) pod_uid: Option<String>,
    /// The container's runtime ID (64 hex digits).
    pub(crate) container_id: String,
}

/// Why the cgroup text names no single container.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CgroupError {
    /// A line is not `hierarchy-ID:controller-list:path`.
    #[error("line {line} is not hierarchy-ID:controller-list:path")]
    Malformed {
        /// 1-based line number.
        line: usize,
    },
    /// Lines name different containers.
    #[error("the cgroup lines name two container IDs ({0} and {1})")]
    TwoContainers(String, String),
    /// Lines name different pods.
    #[error("the cgroup lines name two pod UIDs ({0} and {1})")]
    TwoPods(String, String),
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The first word of exactly 64 hex digits in `segment`.
fn container_id_in(segment: &str) -> Option<&str> {
    segment
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.len() == 64 && w.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The UID of the first `pod<8-4-4-4-12 hex, '-' or '_' between>` word in `segment`, with
/// `-` separators.
fn pod_uid_in(segment: &str) -> Option<String> {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    let b = segment.as_bytes();
    let mut from = 0;
    while let Some(at) = segment.get(from..).and_then(|s| s.find("pod")) {
        let start = from + at;
        from = start + 3;
        if start > 0 && is_word(b[start - 1]) {
            continue;
        }
        let mut i = start + 3;
        let mut uid = String::with_capacity(36);
        let mut ok = true;
        for (g, len) in GROUPS.iter().enumerate() {
            if g > 0 {
                if i < b.len() && (b[i] == b'-' || b[i] == b'_') {
                    uid.push('-');
                    i += 1;
                } else {
                    ok = false;
                    break;
                }
            }
            let end = i + len;
            if end > b.len() || !b[i..end].iter().all(u8::is_ascii_hexdigit) {
                ok = false;
                break;
            }
            uid.push_str(&segment[i..end]);
            i = end;
        }
        if ok && (i == b.len() || !is_word(b[i])) {
            return Some(uid);
        }
    }
    None
}

/// The container (and pod) one cgroup path names.
fn in_path(path: &str) -> Option<PodContainer> {
    let mut found: Option<PodContainer> = None;
    for segment in path.rsplit('/') {
        if found.is_none() {
            found = container_id_in(segment).map(|id| PodContainer {
                pod_uid: None,
                container_id: id.to_owned(),
            });
        }
        if let Some(f) = &mut found {
            if let Some(uid) = pod_uid_in(segment) {
                f.pod_uid = Some(uid);
                break;
            }
        }
    }
    found
}

/// The pod and container `/proc/PID/cgroup` (its text) names; `None` when it names no
/// container.
pub(crate) fn locate(text: &str) -> Result<Option<PodContainer>, CgroupError> {
    let mut found: Option<PodContainer> = None;
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CgroupError::Malformed { line: n + 1 });
        };
        let Some(this) = in_path(path) else {
            continue;
        };
        match &mut found {
            None => found = Some(this),
            Some(seen) => {
                if seen.container_id != this.container_id {
                    return Err(CgroupError::TwoContainers(
                        seen.container_id.clone(),
                        this.container_id,
                    ));
                }
                match (&seen.pod_uid, this.pod_uid) {
                    (Some(a), Some(b)) if *a != b => {
                        return Err(CgroupError::TwoPods(a.clone(), b));
                    }
                    (None, Some(b)) => seen.pod_uid = Some(b),
                    _ => {}
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ID: &str = "9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961";
    const ID2: &str = "09bc3d7ade839efec32b6bec4ec79d099027a668ddba043083ec21d3c3b8f1f6";
    const UID: &str = "2c48913c-b29f-11e7-9350-020968147796";

    fn at(pod: Option<&str>, id: &str) -> Option<PodContainer> {
        Some(PodContainer {
            pod_uid: pod.map(str::to_owned),
            container_id: id.to_owned(),
        })
    }

    #[test]
    fn cgroup_v1_cgroupfs_lines_as_a_kubelet_with_docker_writes_them() {
        let text = format!(
            "12:hugetlb:/kubepods/burstable/pod{UID}/{ID}\n\
             11:devices:/kubepods/burstable/pod{UID}/{ID}\n\
             10:cpu,cpuacct:/kubepods/burstable/pod{UID}/{ID}\n\
             2:name=systemd:/kubepods/burstable/pod{UID}/{ID}\n\
             1:memory:/\n"
        );
        assert_eq!(locate(&text), Ok(at(Some(UID), ID)));
    }

    #[test]
    fn systemd_slices_with_underscores_for_docker_crio_and_containerd() {
        let u = UID.replace('-', "_");
        for path in [
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/docker-{ID}.scope"),
            format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"),
            format!("/system.slice/containerd.service/kubepods-besteffort-pod{u}.slice:cri-containerd:{ID}"),
        ] {
            assert_eq!(locate(&format!("0::{path}\n")), Ok(at(Some(UID), ID)), "{path}");
            assert_eq!(locate(&format!("1:name=systemd:{path}\n")), Ok(at(Some(UID), ID)), "{path}");
        }
    }

    #[test]
    fn cgroup_namespaced_kind_and_pod_less_forms() {
        assert_eq!(
            locate(&format!("0::/../../../burstable/pod{UID}/{ID}\n")),
            Ok(at(Some(UID), ID))
        );
        // kind: the pod's container runs inside a docker container; the inner one counts.
        assert_eq!(
            locate(&format!(
                "0::/docker/{ID2}/kubepods/besteffort/pod{UID}/{ID}\n"
            )),
            Ok(at(Some(UID), ID))
        );
        // kubeedge cri-o: a container without a pod UID in the path.
        assert_eq!(
            locate(&format!("0::/../crio-{ID}.scope\n")),
            Ok(at(None, ID))
        );
        // A line with the pod UID completes one without (kind on a mac).
        let text = format!(
            "1:name=systemd:/docker/{ID}/system.slice/containerd.service\n\
             0::/kubepods/besteffort/pod{UID}/{ID}\n"
        );
        assert_eq!(locate(&text), Ok(at(Some(UID), ID)));
    }

    #[test]
    fn a_process_in_no_container_is_no_pod() {
        let text = "0::/user.slice/user-1000.slice/session-2.scope\n\
                    1:name=systemd:/kubepods.slice\n";
        assert_eq!(locate(text), Ok(None));
        assert_eq!(locate(""), Ok(None));
        // 63 and 65 hex digits are not container IDs; `pods<uid>` is not a pod word.
        let short = &ID[..63];
        assert_eq!(
            locate(&format!("0::/kubepods/pod{UID}/{short}\n")),
            Ok(None)
        );
        assert_eq!(locate(&format!("0::/kubepods/pod{UID}/{ID}a\n")), Ok(None));
        assert_eq!(
            locate(&format!("0::/kubepods/xpod{UID}/{ID}\n")),
            Ok(at(None, ID))
        );
    }

    #[test]
    fn lines_that_disagree_are_refused() {
        assert_eq!(
            locate(&format!(
                "1:cpu:/kubepods/pod{UID}/{ID}\n0::/kubepods/pod{UID}/{ID2}\n"
            )),
            Err(CgroupError::TwoContainers(ID.into(), ID2.into()))
        );
        let other = "11111111-2222-3333-4444-555555555555";
        assert_eq!(
            locate(&format!(
                "1:cpu:/kubepods/pod{UID}/{ID}\n0::/kubepods/pod{other}/{ID}\n"
            )),
            Err(CgroupError::TwoPods(UID.into(), other.into()))
        );
        assert_eq!(
            locate("0::/fine\nno colons here\n"),
            Err(CgroupError::Malformed { line: 2 })
        );
    }

    proptest! {
        #[test]
        fn any_text_gives_an_answer_never_a_panic(text in "\\PC*") {
            let _ = locate(&text);
        }

        #[test]
        fn cgroup_like_text_gives_an_answer_never_a_panic(
            lines in proptest::collection::vec(
                "[0-9]{1,2}:[a-z=,]{0,12}:(/(pod|kubepods|[0-9a-f_-]{0,70}|\\.\\.|[a-z.:-]{0,20})){0,8}",
                0..6,
            )
        ) {
            let text = lines.join("\n");
            if let Ok(Some(found)) = locate(&text) {
                prop_assert_eq!(found.container_id.len(), 64);
                if let Some(uid) = found.pod_uid {
                    prop_assert_eq!(uid.len(), 36);
                }
            }
        }
    }
}
