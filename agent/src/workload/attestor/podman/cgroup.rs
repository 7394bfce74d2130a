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

/// Where a process's container lives: its id and, for a rootless podman, the
/// uid whose podman owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRef {
    /// The container's full id (64 lowercase hex digits).
    pub id: String,
    /// `Some(uid)` when the cgroup lies under `user@<uid>.service` (a
    /// rootless podman of that user); `None` for the rootful podman.
    pub rootless_uid: Option<u32>,
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
/// container. Lines disagreeing on the id or on the owner give `None`.
pub fn locate_container(text: &str) -> Option<ContainerRef> {
    let mut found: Option<ContainerRef> = None;
    for line in text.lines() {
        // hierarchy-ID:controller-list:cgroup-path; the path may contain ':'.
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(here) = container_in_path(path) else {
            continue;
        };
        match &found {
            None => found = Some(here),
            Some(seen) if *seen == here => {}
            Some(_) => return None,
        }
    }
    found
}

/// The outermost container named in one cgroup path.
fn container_in_path(path: &str) -> Option<ContainerRef> {
    let mut rootless_uid = None;
    for component in path.split('/') {
        if let Some(uid) = user_service_uid(component) {
            rootless_uid = Some(uid);
            continue;
        }
        if let Some(id) = container_component(component) {
            return Some(ContainerRef {
                id: id.to_owned(),
                rootless_uid,
            });
        }
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
pub fn is_container_id(s: &str) -> bool {
    s.len() == ID_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests;
