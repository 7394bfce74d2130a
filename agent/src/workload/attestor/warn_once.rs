//! "Log this once per executable": a bounded memory of the notices already
//! logged, so a workload that calls a thousand times a minute does not
//! write a thousand identical warnings.

use std::collections::HashSet;
use std::sync::Mutex;

use crate::workload::caller::ExeId;

/// Notices kept before the memory is emptied (after which each is logged
/// once more). Executables on one node are few; the bound only stops a
/// stream of distinct binaries from growing memory.
const MAX_NOTICES: usize = 4096;

/// Something worth one warning per executable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Notice {
    /// Larger than the hashing cap (keyed with its size, so a new version
    /// of another size is reported again).
    TooLarge { exe: ExeId, size: u64, max: u64 },
    /// Its path is not UTF-8.
    PathNotUtf8(ExeId),
    /// Run by a caller outside the agent's user namespace.
    NotAttestable(ExeId),
}

/// The notices logged so far.
#[derive(Debug, Default)]
pub(crate) struct Notices {
    seen: Mutex<HashSet<Notice>>,
}

impl Notices {
    /// True the first time `notice` is given (then log it), false after.
    pub(crate) fn first(&self, notice: Notice) -> bool {
        // Insert is one call: a poisoned set is still a sound set.
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&notice) {
            return false;
        }
        if seen.len() >= MAX_NOTICES {
            seen.clear();
        }
        seen.insert(notice)
    }

    /// How many notices are remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exe(ino: u64) -> ExeId {
        ExeId {
            dev: (8, 1),
            ino,
            mnt_id: Some(30),
        }
    }

    #[test]
    fn each_notice_is_first_once() {
        let n = Notices::default();
        assert!(n.first(Notice::PathNotUtf8(exe(1))));
        assert!(!n.first(Notice::PathNotUtf8(exe(1))));
        // Another executable, or another notice about the same one.
        assert!(n.first(Notice::PathNotUtf8(exe(2))));
        assert!(n.first(Notice::NotAttestable(exe(1))));
        let big = |size| Notice::TooLarge {
            exe: exe(1),
            size,
            max: 10,
        };
        assert!(n.first(big(11)));
        assert!(!n.first(big(11)));
        assert!(n.first(big(12)), "a new size is a new version");
    }

    #[test]
    fn memory_is_bounded() {
        let n = Notices::default();
        for ino in 0..(MAX_NOTICES as u64 * 3) {
            assert!(n.first(Notice::PathNotUtf8(exe(ino))));
            assert!(n.len() <= MAX_NOTICES);
        }
    }
}
