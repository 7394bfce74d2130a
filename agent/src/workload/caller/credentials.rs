//! The caller's credentials as `/proc/PID/status` shows them: effective UID
//! and GID (which SO_PEERCRED reported at connect) and supplementary groups.
//! Recorded when the caller is accepted; a change afterwards (setuid,
//! setgid, setgroups) makes the caller another identity.

use std::fs;
use std::path::PathBuf;

use super::proc_stat::{is_gone, ProcParseError};
use super::CallerError;

/// Effective UID/GID and supplementary groups (sorted, without duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    pub euid: u32,
    pub egid: u32,
    pub groups: Vec<u32>,
}

impl Credentials {
    /// Reads `/proc/PID/status`.
    pub(crate) fn read(pid: i32) -> Result<Credentials, CallerError> {
        let path = PathBuf::from(format!("/proc/{pid}/status"));
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if is_gone(&e) => return Err(CallerError::ProcessGone { pid }),
            Err(source) => return Err(CallerError::ProcStat { path, source }),
        };
        parse_status(&text).map_err(|error| CallerError::ProcStatParse { path, error })
    }

    /// What differs from `recorded`, in words (`None` when nothing does).
    pub(crate) fn change_from(&self, recorded: &Credentials) -> Option<String> {
        let mut changes = Vec::new();
        if self.euid != recorded.euid {
            changes.push(format!(
                "effective UID {} (was {})",
                self.euid, recorded.euid
            ));
        }
        if self.egid != recorded.egid {
            changes.push(format!(
                "effective GID {} (was {})",
                self.egid, recorded.egid
            ));
        }
        if self.groups != recorded.groups {
            changes.push(format!(
                "supplementary groups {:?} (were {:?})",
                self.groups, recorded.groups
            ));
        }
        (!changes.is_empty()).then(|| changes.join(", "))
    }
}

/// The credentials in the text of `/proc/PID/status`: the second field of
/// `Uid:` and `Gid:` (real, effective, saved, filesystem) and `Groups:`.
pub(crate) fn parse_status(text: &str) -> Result<Credentials, ProcParseError> {
    let line = |name: &'static str| -> Result<&str, ProcParseError> {
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k == name).then_some(v)
            })
            .ok_or(ProcParseError::MissingLine(name))
    };
    let effective = |name: &'static str| -> Result<u32, ProcParseError> {
        let value = line(name)?;
        let field = value
            .split_ascii_whitespace()
            .nth(1)
            .ok_or(ProcParseError::NoEffectiveId(name))?;
        field.parse().map_err(|error| ProcParseError::EffectiveId {
            line: name,
            value: field.to_owned(),
            error,
        })
    };
    let mut groups = line("Groups")?
        .split_ascii_whitespace()
        .map(|g| {
            g.parse().map_err(|error| ProcParseError::Group {
                value: g.to_owned(),
                error,
            })
        })
        .collect::<Result<Vec<u32>, ProcParseError>>()?;
    groups.sort_unstable();
    groups.dedup();
    Ok(Credentials {
        euid: effective("Uid")?,
        egid: effective("Gid")?,
        groups,
    })
}
