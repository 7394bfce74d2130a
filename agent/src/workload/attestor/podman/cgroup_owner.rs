//! Who owns a container's cgroup, as the agent sees the cgroup filesystem.
//!
//! A cgroup directory belongs to whoever created it: root for a rootful
//! podman's containers, the user (through systemd's delegation of
//! `user@<uid>.service`) for a rootless one. A process cannot chown a
//! directory to someone else, so a user who names a cgroup of its own
//! delegated subtree `libpod-<id of a root container>` still owns that
//! directory, and is not taken for that container.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::cgroup::{CgroupDir, ContainerRef};

/// Why the owner of a container's cgroup is not known.
#[derive(Debug, thiserror::Error)]
pub enum CgroupOwnerError {
    /// The mount table could not be read.
    #[error("reading the mount table {path}: {source}")]
    Mounts {
        /// The mountinfo file.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// None of the container's cgroups is on a cgroup filesystem the agent
    /// has mounted (or they are gone).
    #[error("none of its cgroups ({cgroups}) is visible on the agent's cgroup mounts")]
    NotVisible {
        /// The cgroups looked for.
        cgroups: String,
    },
    /// Two of its cgroups have different owners.
    #[error(
        "its cgroups have different owners: {first} is uid {first_uid}, {other} is uid {other_uid}"
    )]
    Disagree {
        /// One directory.
        first: PathBuf,
        /// Its owner.
        first_uid: u32,
        /// Another.
        other: PathBuf,
        /// Its owner.
        other_uid: u32,
    },
}

/// One cgroup filesystem mount of the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CgroupMount {
    /// cgroup2 (the unified hierarchy) rather than a v1 hierarchy.
    v2: bool,
    /// Super options of a v1 mount: its controllers, `name=systemd`...
    options: Vec<String>,
    /// The cgroup shown at the mount point (`/` unless a sub-tree is mounted).
    root: String,
    /// Where it is mounted.
    point: PathBuf,
}

/// The cgroup mounts of a mountinfo text (`/proc/self/mountinfo`).
pub(crate) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        // id parent major:minor root point options [optional...] - fstype source super
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(root), Some(point), Some(fstype), Some(sup)) = (
            fields.get(3),
            fields.get(4),
            fields.get(dash + 1),
            fields.get(dash + 3),
        ) else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(CgroupMount {
            v2,
            options: sup.split(',').map(str::to_owned).collect(),
            root: unescape(root),
            point: PathBuf::from(unescape(point)),
        });
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            if let Some(oct) = b.get(i + 1..i + 4) {
                if oct.iter().all(|d| (b'0'..=b'7').contains(d)) {
                    let v = oct
                        .iter()
                        .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                    if let Ok(byte) = u8::try_from(v) {
                        out.push(byte);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where `dir` is on the agent's filesystem, if one of `mounts` shows its
/// hierarchy.
fn locate(dir: &CgroupDir, mounts: &[CgroupMount]) -> Option<PathBuf> {
    let wanted: Vec<&str> = dir
        .controllers
        .split(',')
        .filter(|c| !c.is_empty())
        .collect();
    mounts.iter().find_map(|m| {
        let same_hierarchy = if wanted.is_empty() {
            m.v2
        } else {
            !m.v2 && wanted.iter().all(|c| m.options.iter().any(|o| o == c))
        };
        if !same_hierarchy {
            return None;
        }
        let rel = if m.root == "/" {
            dir.path.as_str()
        } else {
            let rest = dir.path.strip_prefix(m.root.as_str())?;
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            rest
        };
        Some(m.point.join(rel.trim_start_matches('/')))
    })
}

/// The uid owning the container's cgroups, read through the mounts in
/// `mountinfo` (the agent's own: `/proc/self/mountinfo`), and the directory
/// it was read from. Every visible cgroup of the container must have the
/// same owner.
pub(crate) fn cgroup_owner(
    container: &ContainerRef,
    mountinfo: &Path,
) -> Result<(u32, PathBuf), CgroupOwnerError> {
    let text = fs::read_to_string(mountinfo).map_err(|source| CgroupOwnerError::Mounts {
        path: mountinfo.to_owned(),
        source,
    })?;
    let mounts = parse_mountinfo(&text);
    let mut found: Option<(u32, PathBuf)> = None;
    for dir in &container.cgroups {
        let Some(path) = locate(dir, &mounts) else {
            continue;
        };
        // Not following links: a cgroup directory is never one.
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        match &found {
            None => found = Some((meta.uid(), path)),
            Some((uid, first)) if *uid != meta.uid() => {
                return Err(CgroupOwnerError::Disagree {
                    first: first.clone(),
                    first_uid: *uid,
                    other: path,
                    other_uid: meta.uid(),
                })
            }
            Some(_) => {}
        }
    }
    found.ok_or_else(|| CgroupOwnerError::NotVisible {
        cgroups: container
            .cgroups
            .iter()
            .map(|d| format!("{}:{}", d.controllers, d.path))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests;
