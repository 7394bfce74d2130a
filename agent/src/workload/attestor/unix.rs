//! The `unix` attestor: who the caller runs as and what it runs.
//!
//! | selector | value |
//! |---|---|
//! | `unix:uid:<n>` / `unix:gid:<n>` | effective UID / GID at connect(2) (SO_PEERCRED) |
//! | `unix:user:<name>` / `unix:group:<name>` | their names, when the agent's name service knows them |
//! | `unix:supplementary_gid:<n>` | each GID of `Groups:` in `/proc/PID/status` at connect |
//! | `unix:supplementary_group:<name>` | their names, when known |
//! | `unix:path:<path>` | the executable (`/proc/PID/exe`) at connect |
//! | `unix:sha256:<hex>` | SHA-256 of the executable, up to a size cap |
//!
//! Names are resolved with the agent's own `/etc/passwd` and NSS, not the
//! caller's (a container may map the same number to another name). Every
//! fact is the caller's as recorded when it connected; a caller whose
//! credentials or program changed since is refused before attestation. A
//! caller outside the agent's user namespace gets no `unix:path` or
//! `unix:sha256` (see `Executable::attestable`).

use std::sync::Arc;

use ironroot_api::selector::Selector;
use nix::unistd::{Gid, Group, Uid, User};
use serde::{Deserialize, Serialize};

use super::exe_hash::{ExeHasher, DEFAULT_SHA256_MAX_BYTES};
use super::{push_selector, WorkloadAttestError, WorkloadAttestor};
use crate::workload::caller::Caller;

const NAME: &str = "unix";

/// Configuration of the `unix` attestor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnixAttestorConfig {
    /// Largest executable, in bytes, that is hashed for `unix:sha256`.
    /// Default 64 MiB. A larger executable gets no `unix:sha256` selector
    /// (and a warning in the log); attestation still succeeds.
    #[serde(default = "default_sha256_max_bytes")]
    pub sha256_max_bytes: u64,
}

fn default_sha256_max_bytes() -> u64 {
    DEFAULT_SHA256_MAX_BYTES
}

impl Default for UnixAttestorConfig {
    fn default() -> Self {
        UnixAttestorConfig {
            sha256_max_bytes: DEFAULT_SHA256_MAX_BYTES,
        }
    }
}

/// The `unix` attestor.
#[derive(Debug)]
pub struct UnixAttestor {
    config: UnixAttestorConfig,
    hasher: Arc<ExeHasher>,
}

impl UnixAttestor {
    /// An attestor hashing through `hasher` (share it with the `process`
    /// attestor so each executable is hashed once).
    pub fn new(config: UnixAttestorConfig, hasher: Arc<ExeHasher>) -> Self {
        UnixAttestor { config, hasher }
    }
}

impl WorkloadAttestor for UnixAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn attest(&self, caller: &Caller) -> Result<Vec<Selector>, WorkloadAttestError> {
        let pid = caller.pid;
        let mut out = Vec::new();

        push_selector(&mut out, pid, NAME, format!("uid:{}", caller.uid));
        if let Some(name) = user_name(caller.uid)? {
            push_selector(&mut out, pid, NAME, format!("user:{name}"));
        }
        push_selector(&mut out, pid, NAME, format!("gid:{}", caller.gid));
        if let Some(name) = group_name(caller.gid)? {
            push_selector(&mut out, pid, NAME, format!("group:{name}"));
        }

        // The groups recorded at accept: a change since is refused by the
        // caller check, so these are the caller's groups now too.
        for &gid in caller.groups() {
            push_selector(&mut out, pid, NAME, format!("supplementary_gid:{gid}"));
            if let Some(name) = group_name(gid)? {
                push_selector(&mut out, pid, NAME, format!("supplementary_group:{name}"));
            }
        }

        super::push_exe_selectors(
            &mut out,
            caller,
            &self.hasher,
            self.config.sha256_max_bytes,
            NAME,
            "path",
        )?;
        Ok(out)
    }
}

fn user_name(uid: u32) -> Result<Option<String>, WorkloadAttestError> {
    User::from_uid(Uid::from_raw(uid))
        .map(|u| u.map(|u| u.name))
        .map_err(|e| WorkloadAttestError::Unavailable {
            attestor: NAME,
            reason: format!("looking up the name of UID {uid}: {e}"),
        })
}

fn group_name(gid: u32) -> Result<Option<String>, WorkloadAttestError> {
    Group::from_gid(Gid::from_raw(gid))
        .map(|g| g.map(|g| g.name))
        .map_err(|e| WorkloadAttestError::Unavailable {
            attestor: NAME,
            reason: format!("looking up the name of GID {gid}: {e}"),
        })
}

#[cfg(test)]
mod tests;
