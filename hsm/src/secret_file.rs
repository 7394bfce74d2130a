//! The one rule for files holding a secret the key manager reads (the token's user PIN, an
//! OpenBao token or AppRole secret ID): no access for users outside the file's owner and
//! group. Such a file readable by every user of the machine gives away the HSM or the transit
//! keys to any local account; writable by every user, it lets any of them substitute a
//! credential. Refused (fail closed) rather than warned about: a warning in a log nobody reads
//! leaves the secret open. Group access stays allowed: Vault Agent's file sink writes 0640 by
//! default, and a group shared with a sidecar is a deliberate choice.

use std::fs::Metadata;

/// The permission bits of `meta` when they grant "other" users any access; `None` when the
/// file is private to its owner and group. Always `None` off unix.
pub(crate) fn exposed_mode(meta: &Metadata) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        (mode & 0o007 != 0).then_some(mode)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        None
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn only_access_by_other_users_counts() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, "x").unwrap();
        for (mode, exposed) in [
            (0o600, false),
            (0o640, false),
            (0o660, false),
            (0o400, false),
            (0o604, true),
            (0o644, true),
            (0o602, true),
            (0o601, true),
            (0o666, true),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let meta = std::fs::metadata(&f).unwrap();
            assert_eq!(exposed_mode(&meta).is_some(), exposed, "mode {mode:o}");
        }
    }
}
