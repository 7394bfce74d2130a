//! The parts of podman's libpod inspect answers the attestor reads, and the
//! selectors made from them.

use std::collections::BTreeMap;

use ironroot_api::selector::{normalize_selectors, Selector};
use serde::Deserialize;

/// Selector type of everything this attestor reports.
pub(crate) const SELECTOR_TYPE: &str = "podman";

/// `GET /libpod/containers/{id}/json`, the fields used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerInspect {
    /// Full container id.
    pub id: String,
    /// Container name (no leading '/', unlike the Docker API).
    #[serde(default)]
    pub name: String,
    /// The image reference the container was created from, e.g.
    /// `localhost/app:1.0` (empty for containers made from a rootfs).
    #[serde(default)]
    pub image_name: String,
    /// Image id (64 hex, no `sha256:` prefix).
    #[serde(default)]
    pub image: String,
    /// Id of the container's pod; empty when it is in none.
    #[serde(default)]
    pub pod: String,
    /// The container's configuration.
    #[serde(default)]
    pub config: Option<ContainerConfig>,
}

/// `Config` of a container inspect answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    /// Labels (`null` when there are none).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// `GET /libpod/pods/{id}/json`, the fields used.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PodInspect {
    /// Full pod id.
    #[serde(default)]
    pub id: String,
    /// Pod name.
    #[serde(default)]
    pub name: String,
    /// Pod labels (`null` when there are none).
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

/// The selectors of a container (and its pod), sorted and without duplicates:
/// `podman:image_id:`, `podman:image_name:`, `podman:container_name:`,
/// `podman:label:<k>:<v>`, `podman:pod_name:`, `podman:pod_label:<k>:<v>`.
///
/// Empty facts (a container without an image name) give no selector. A fact
/// that cannot be a selector (a label value with a control character or
/// longer than the selector limit) is left out and returned in the second
/// list as `(what, why)`: no entry can name it, so leaving it out grants
/// nothing, but the caller should log it.
pub(crate) fn selectors(
    container: &ContainerInspect,
    pod: Option<&PodInspect>,
) -> (Vec<Selector>, Vec<(String, String)>) {
    let mut values: Vec<String> = [
        ("image_id", &container.image),
        ("image_name", &container.image_name),
        ("container_name", &container.name),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(what, v)| format!("{what}:{v}"))
    .collect();
    let labels = container.config.as_ref().and_then(|c| c.labels.as_ref());
    for (k, v) in labels.into_iter().flatten() {
        values.push(format!("label:{k}:{v}"));
    }
    if let Some(pod) = pod {
        if !pod.name.is_empty() {
            values.push(format!("pod_name:{}", pod.name));
        }
        for (k, v) in pod.labels.iter().flatten() {
            values.push(format!("pod_label:{k}:{v}"));
        }
    }

    let mut out = Vec::with_capacity(values.len());
    let mut skipped = Vec::new();
    for value in values {
        match Selector::new(SELECTOR_TYPE, value.as_str()) {
            Ok(s) => out.push(s),
            Err(e) => skipped.push((abbreviate(&value), e.to_string())),
        }
    }
    normalize_selectors(&mut out);
    (out, skipped)
}

/// The first 80 characters of `s` with control characters escaped, for logs.
fn abbreviate(s: &str) -> String {
    let mut out: String = s.chars().take(80).flat_map(char::escape_debug).collect();
    if s.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests;
