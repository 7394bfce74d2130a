//! Finding a podman container's id in a process's cgroup membership
//! (`/proc/PID/cgroup`).
//!
//! Podman names the cgroup of a container after its 64-hex id. The forms
//! recognised, one path component each (anything may follow it, e.g. the
//! `/container` sub-cgroup podman creates under a systemd scope, or cgroups a
//! container makes for itself):
//!
//! | manager  | example path                                                        |
//! |----------|---------------------------------------------------------------------|
//! | cgroupfs | `/libpod_parent/libpod-<id>` (pods: `/libpod_parent/<pod>/libpod-<id>`) |
//! | systemd  | `/machine.slice/libpod-<id>.scope` (pods: `machine-libpod_pod_<pod>.slice/…`) |
//! | rootless | `/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-<id>.scope` |
//! | split    | `…/libpod-payload-<id>` (cgroup mode "split")                      |
//!
//! Never a container: `libpod-conmon-<id>.scope` and `…/conmon` (the monitor
//! process podman runs beside each container) and the pod cgroups themselves.

/// Where a process's container lives: its id, for a rootless podman the uid
/// whose podman owns it, and the container's own cgroup in each hierarchy
/// that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The container's full id (64 lowercase hex digits).
    pub id: String,
    /// `Some(uid)` when the cgroup lies under `user@<uid>.service` (a
    /// rootless podman of that user; the outermost such component counts);
    /// `None` for the rootful podman.
    pub rootless_uid: Option<u32>,
    /// The container's cgroup in each line that names it.
    pub cgroups: Vec<CgroupDir>,
}

/// A container's own cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    /// The controllers of the line (`memory`, `cpu,cpuacct`,
    /// `name=systemd`), empty for the unified (v2) hierarchy.
    pub controllers: String,
    /// The path of the container's cgroup: the line's path up to and
    /// including the container's component (not cgroups made inside it).
    pub path: String,
}

/// Length of a podman container id in hex digits.
const ID_LEN: usize = 64;

/// The container id in the text of `/proc/PID/cgroup`, or `None` when the
/// process is in no podman container.
///
/// Every line (`hierarchy:controllers:path`) is looked at; lines without a
/// container (e.g. cgroup v1 controllers a rootless podman cannot use) are
/// ignored. Lines naming *different* containers make the answer `None`: a
/// process is in one container or the membership is not one podman made.
/// Within a path the outermost container wins (a container nested in another
/// is, to the host's podman, part of the outer one).
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    locate_container(text).map(|c| c.id)
}

/// Like [`container_id_from_cgroup`], also telling whose podman owns the
/// container and where its cgroups are. Lines disagreeing on the id or on
/// the owner give `None`.
pub(crate) fn locate_container(text: &str) -> Option<ContainerRef> {
    let mut found: Option<ContainerRef> = None;
    for line in text.lines() {
        // hierarchy-ID:controller-list:cgroup-path; the path may contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Some((id, rootless_uid, prefix)) = container_in_path(path) else {
            continue;
        };
        let dir = CgroupDir {
            controllers: controllers.to_owned(),
            path: prefix.to_owned(),
        };
        match &mut found {
            None => {
                found = Some(ContainerRef {
                    id: id.to_owned(),
                    rootless_uid,
                    cgroups: vec![dir],
                })
            }
            Some(seen) if seen.id == id && seen.rootless_uid == rootless_uid => {
                seen.cgroups.push(dir)
            }
            Some(_) => return None,
        }
    }
    found
}

/// The outermost container named in one cgroup path: its id, the owner uid
/// of the outermost `user@<uid>.service` before it, and the path up to and
/// including the container's component.
fn container_in_path(path: &str) -> Option<(&str, Option<u32>, &str)> {
    let mut rootless_uid = None;
    let mut end = 0;
    for component in path.split('/') {
        end += component.len();
        if let Some(uid) = user_service_uid(component) {
            // The outermost one is systemd's manager of that user; one
            // further down was named by whoever owns the subtree.
            rootless_uid.get_or_insert(uid);
        } else if let Some(id) = container_component(component) {
            return Some((id, rootless_uid, &path[..end]));
        }
        end += 1; // the '/'
    }
    None
}

/// `user@1000.service` → 1000 (systemd's per-user manager, parent of every
/// rootless container's scope).
fn user_service_uid(component: &str) -> Option<u32> {
    let digits = component.strip_prefix("user@")?.strip_suffix(".service")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// `libpod-<id>`, `libpod-<id>.scope` or `libpod-payload-<id>[.scope]` → id.
fn container_component(component: &str) -> Option<&str> {
    let rest = component.strip_prefix("libpod-")?;
    let rest = rest.strip_prefix("payload-").unwrap_or(rest);
    let id = rest.strip_suffix(".scope").unwrap_or(rest);
    // `libpod-conmon-<id>.scope` fails here: "conmon-…" is not hex.
    is_container_id(id).then_some(id)
}

/// Whether `s` has the shape of a full podman id: 64 lowercase hex digits.
pub(crate) fn is_container_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
