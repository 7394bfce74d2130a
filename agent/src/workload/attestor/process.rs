//! The `process` attestor: what the caller runs and where it runs.
//!
//! | selector | value |
//! |---|---|
//! | `process:exe:<path>` | the executable (`/proc/PID/exe`) at connect |
//! | `process:sha256:<hex>` | SHA-256 of that executable, up to a size cap |
//! | `process:args:<args>` | the command line, arguments joined by one space |
//! | `process:cgroup:<path>` | the path of each line of `/proc/PID/cgroup` |
//! | `process:systemd_unit:<unit>` | the systemd unit owning the cgroup (`foo.service`, `bar.scope`) |
//! | `process:parent_exe:<path>` | the parent's executable |
//! | `process:ns:<kind>:<inode>` | namespace inodes: mnt, pid, net, user, uts, ipc, cgroup |
//! | `process:no_new_privs:<true\|false>` | `NoNewPrivs` of `/proc/PID/status` |
//!
//! The command line is written by the process itself and can be changed at
//! run time: match on it only together with selectors it cannot choose.
//! The executable is the one recorded when the caller connected (a caller
//! that exec'd since is refused before attestation); a caller outside the
//! agent's user namespace gets no `process:exe` or `process:sha256`, and a
//! parent outside it no `process:parent_exe` (see `Executable::attestable`).

use std::collections::BTreeSet;
use std::fs;
use std::sync::Arc;

use ironroot_api::selector::Selector;
use serde::{Deserialize, Serialize};

use super::exe_hash::{ExeHasher, DEFAULT_SHA256_MAX_BYTES};
use super::procfs::{proc_err, read_bytes, read_text, require_status_field};
use super::{push_selector, WorkloadAttestError, WorkloadAttestor};
use crate::workload::caller::{is_gone, read_stat, same_user_namespace_as_agent, Caller};

const NAME: &str = "process";

/// Namespace kinds reported as `process:ns:<kind>:<inode>`.
pub(crate) const NAMESPACE_KINDS: [&str; 7] = ["mnt", "pid", "net", "user", "uts", "ipc", "cgroup"];

/// Default cap on the length of `process:args`, in bytes.
pub(crate) const DEFAULT_ARGS_MAX_BYTES: usize = 1024;

/// Configuration of the `process` attestor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessAttestorConfig {
    /// Largest executable, in bytes, that is hashed for `process:sha256`.
    /// Default 64 MiB. A larger executable gets no `process:sha256` selector
    /// (and a warning in the log); attestation still succeeds.
    #[serde(default = "default_sha256_max_bytes")]
    pub sha256_max_bytes: u64,
    /// Longest command line, in bytes once joined, given as `process:args`.
    /// Default 1024 (selector values are at most 2048 bytes). A longer one
    /// gets no `process:args` selector rather than a truncated one, which
    /// would match every command line with the same beginning.
    #[serde(default = "default_args_max_bytes")]
    pub args_max_bytes: usize,
}

fn default_sha256_max_bytes() -> u64 {
    DEFAULT_SHA256_MAX_BYTES
}

fn default_args_max_bytes() -> usize {
    DEFAULT_ARGS_MAX_BYTES
}

impl Default for ProcessAttestorConfig {
    fn default() -> Self {
        ProcessAttestorConfig {
            sha256_max_bytes: DEFAULT_SHA256_MAX_BYTES,
            args_max_bytes: DEFAULT_ARGS_MAX_BYTES,
        }
    }
}

/// The `process` attestor.
#[derive(Debug)]
pub struct ProcessAttestor {
    config: ProcessAttestorConfig,
    hasher: Arc<ExeHasher>,
}

impl ProcessAttestor {
    /// An attestor hashing through `hasher` (share it with the `unix`
    /// attestor so each executable is hashed once).
    pub fn new(config: ProcessAttestorConfig, hasher: Arc<ExeHasher>) -> Self {
        ProcessAttestor { config, hasher }
    }
}

impl WorkloadAttestor for ProcessAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attest(&self, caller: &Caller) -> Result<Vec<Selector>, WorkloadAttestError> {
        let pid = caller.pid;
        let mut out = Vec::new();

        super::push_exe_selectors(
            &mut out,
            caller,
            &self.hasher,
            self.config.sha256_max_bytes,
            NAME,
            "exe",
        )?;

        let cmdline = read_bytes(caller, "cmdline", "the command line")?;
        match join_args(&cmdline, self.config.args_max_bytes) {
            Ok(Some(args)) => push_selector(&mut out, pid, NAME, format!("args:{args}")),
            Ok(None) => {}
            Err(why) => tracing::warn!(pid, why, "no process:args selector"),
        }

        let cgroup = read_text(caller, "cgroup", "the cgroups")?;
        let mut paths = BTreeSet::new();
        let mut units = BTreeSet::new();
        for line in cgroup.lines().filter(|l| !l.is_empty()) {
            let Some((controllers, path)) = parse_cgroup_line(line) else {
                return Err(WorkloadAttestError::Parse {
                    what: "the cgroups",
                    path: caller.proc_path("cgroup"),
                    reason: format!("line '{line}' is not ID:CONTROLLERS:PATH"),
                });
            };
            paths.insert(path);
            // The unified hierarchy, or systemd's own on a v1/hybrid host.
            if controllers.is_empty() || controllers == "name=systemd" {
                units.extend(systemd_unit(path));
            }
        }
        for p in paths {
            push_selector(&mut out, pid, NAME, format!("cgroup:{p}"));
        }
        for u in units {
            push_selector(&mut out, pid, NAME, format!("systemd_unit:{u}"));
        }

        if let Some(parent) = parent_exe(caller)? {
            push_selector(&mut out, pid, NAME, format!("parent_exe:{parent}"));
        }

        for kind in NAMESPACE_KINDS {
            let path = caller.proc_path(&format!("ns/{kind}"));
            let link = match fs::read_link(&path) {
                Ok(l) => l,
                // ENOENT while the caller lives: this kernel lacks that kind.
                Err(e) if is_gone(&e) => match proc_err(caller, "a namespace", &path, e) {
                    gone @ WorkloadAttestError::ProcessGone { .. } => return Err(gone),
                    _ => continue,
                },
                Err(e) => return Err(proc_err(caller, "a namespace", &path, e)),
            };
            let inode = link.to_str().and_then(namespace_inode).ok_or_else(|| {
                WorkloadAttestError::Parse {
                    what: "a namespace",
                    path: path.clone(),
                    reason: format!("link target {link:?} is not KIND:[INODE]"),
                }
            })?;
            push_selector(&mut out, pid, NAME, format!("ns:{kind}:{inode}"));
        }

        let status = read_text(caller, "status", "the process status")?;
        let nnp = match require_status_field(caller, &status, "NoNewPrivs")? {
            "0" => false,
            "1" => true,
            other => {
                return Err(WorkloadAttestError::Parse {
                    what: "the process status",
                    path: caller.proc_path("status"),
                    reason: format!("NoNewPrivs is '{other}'"),
                })
            }
        };
        push_selector(&mut out, pid, NAME, format!("no_new_privs:{nnp}"));
        Ok(out)
    }
}

/// The parent's executable. The parent is read from `/proc/PID/stat`, its
/// executable from `/proc/PPID/exe`, then the child's parent is read again:
/// a parent that exits first re-parents the child, so an unchanged PPID
/// means the executable read was the parent's and not a later process that
/// reused the number. `None` when the parent went away meanwhile.
fn parent_exe(caller: &Caller) -> Result<Option<String>, WorkloadAttestError> {
    let ppid = read_stat(caller.pid)?.ppid;
    if ppid <= 0 {
        // Parent outside our PID namespace (or the caller is PID 1).
        return Ok(None);
    }
    let path = std::path::PathBuf::from(format!("/proc/{ppid}/exe"));
    let exe = match fs::read_link(&path) {
        Ok(p) => p,
        Err(e) if is_gone(&e) => {
            tracing::warn!(
                pid = caller.pid,
                ppid,
                "parent exited during attestation; no process:parent_exe"
            );
            return Ok(None);
        }
        Err(e) => {
            // A parent we may not inspect (another user's, or init in some
            // sandboxes) costs the selector, not the workload's identity:
            // fewer selectors can only match fewer entries.
            tracing::warn!(pid = caller.pid, ppid, error = %e, "cannot read the parent's executable; no process:parent_exe");
            return Ok(None);
        }
    };
    // Outside the agent's user namespace a process can point its exe link
    // at any file (see `Executable::attestable`).
    let parent_attestable = matches!(same_user_namespace_as_agent(ppid), Ok(true));
    if read_stat(caller.pid)?.ppid != ppid {
        tracing::warn!(
            pid = caller.pid,
            ppid,
            "parent exited during attestation; no process:parent_exe"
        );
        return Ok(None);
    }
    if !parent_attestable {
        tracing::debug!(
            pid = caller.pid,
            ppid,
            "parent outside the agent's user namespace; no process:parent_exe"
        );
        return Ok(None);
    }
    match exe.into_os_string().into_string() {
        Ok(s) => Ok(Some(s)),
        Err(p) => {
            tracing::warn!(pid = caller.pid, path = ?p, "parent executable path is not UTF-8; no process:parent_exe");
            Ok(None)
        }
    }
}

/// `/proc/PID/cmdline` (NUL-terminated arguments) joined with spaces.
/// `Ok(None)` for an empty command line; `Err` (a reason to log) when it is
/// not UTF-8 or longer than `max` bytes.
pub(crate) fn join_args(cmdline: &[u8], max: usize) -> Result<Option<String>, &'static str> {
    let trimmed = cmdline.strip_suffix(&[0]).unwrap_or(cmdline);
    if trimmed.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(trimmed).map_err(|_| "command line is not UTF-8")?;
    let joined = text.replace('\0', " ");
    if joined.len() > max {
        return Err("command line longer than args_max_bytes");
    }
    Ok(Some(joined))
}

/// Splits a `/proc/PID/cgroup` line `ID:CONTROLLERS:PATH` into controllers
/// and path (a path may contain `:`).
pub(crate) fn parse_cgroup_line(line: &str) -> Option<(&str, &str)> {
    let mut parts = line.splitn(3, ':');
    let _id = parts.next()?;
    let controllers = parts.next()?;
    let path = parts.next()?;
    path.starts_with('/').then_some((controllers, path))
}

/// The systemd unit owning a cgroup path, as systemd itself finds it: the
/// first component that is not a `.slice`, if it is a `.service` or
/// `.scope`. Taking the first rather than the last matters: a unit with
/// delegation may create `…/foo.service/evil.service` below itself, and must
/// not be taken for `evil.service`. A user-session process is owned by
/// `user@UID.service`.
pub(crate) fn systemd_unit(path: &str) -> Option<&str> {
    let first = path
        .split('/')
        .filter(|c| !c.is_empty())
        .find(|c| !c.ends_with(".slice"))?;
    let is_unit = [".service", ".scope"]
        .iter()
        .any(|suffix| first.strip_suffix(suffix).is_some_and(|n| !n.is_empty()));
    is_unit.then_some(first)
}

/// The inode of a namespace link target `KIND:[INODE]`.
pub(crate) fn namespace_inode(target: &str) -> Option<u64> {
    let (_, rest) = target.split_once(":[")?;
    rest.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests;
