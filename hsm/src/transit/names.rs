//! Labels to transit key names and back.
//!
//! A transit key name is one path segment: the configured prefix, then the label with every
//! byte outside `[A-Za-z0-9-]` written as `_XX` (upper-case hex). The encoding is injective
//! (`_` only ever starts an escape) and canonical (a name is decoded only if encoding the
//! result gives it back), so two labels never share a key and a foreign key whose name merely
//! starts with the prefix is never taken for one of ours.

/// Longest label accepted (names stay well inside Vault's path limits even fully escaped).
pub(super) const MAX_LABEL_LEN: usize = 128;

fn kept(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// Whether `prefix` is usable as the start of key names: `[A-Za-z0-9._-]`, at most 64.
pub(super) fn valid_prefix(prefix: &str) -> bool {
    prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `path` can be a mount path in a request line: `/`-separated segments of
/// A-Z a-z 0-9 . _ -, none empty or `..` (a space or a line break from a config file
/// would otherwise break the HTTP request).
pub(super) fn valid_mount(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 256
        && path.split('/').all(|s| {
            !s.is_empty()
                && s != ".."
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// The transit key name of `label`.
pub(super) fn key_name(prefix: &str, label: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + label.len());
    name.push_str(prefix);
    for b in label.bytes() {
        if kept(b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("_{b:02X}"));
        }
    }
    name
}

/// The label whose key name is `name`, if `name` is one [`key_name`] makes with `prefix`.
pub(super) fn label_of(prefix: &str, name: &str) -> Option<String> {
    let rest = name.strip_prefix(prefix)?;
    let bytes = rest.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'_' {
            let hex = rest.get(i + 1..i + 3)?;
            if hex.bytes().any(|c| c.is_ascii_lowercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else if kept(bytes[i]) {
            out.push(bytes[i]);
            i += 1;
        } else {
            return None;
        }
    }
    let label = String::from_utf8(out).ok()?;
    (!label.is_empty() && key_name(prefix, &label) == name).then_some(label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_injective() {
        let labels = [
            "x509-ca-1700000000",
            "a_b",
            "a_5Fb",
            "a.b",
            "a/b",
            "Ünïcode",
            "a b",
            "_",
            "-",
        ];
        let mut names = std::collections::HashSet::new();
        for l in labels {
            let n = key_name("ironroot-", l);
            assert!(n
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            assert_eq!(label_of("ironroot-", &n).as_deref(), Some(l), "{n}");
            assert!(names.insert(n), "{l} collides");
        }
        assert_eq!(key_name("p-", "a_b"), "p-a_5Fb");
    }

    #[test]
    fn foreign_and_non_canonical_names_are_not_ours() {
        assert_eq!(label_of("ironroot-", "other-key"), None);
        assert_eq!(label_of("ironroot-", "ironroot-"), None, "empty label");
        assert_eq!(label_of("ironroot-", "ironroot-a_2"), None, "cut escape");
        assert_eq!(
            label_of("ironroot-", "ironroot-a_2d"),
            None,
            "lower-case hex"
        );
        assert_eq!(
            label_of("ironroot-", "ironroot-a_2D"),
            None,
            "'-' is never escaped"
        );
        assert_eq!(
            label_of("ironroot-", "ironroot-a.b"),
            None,
            "'.' is always escaped"
        );
        assert_eq!(label_of("ironroot-", "ironroot-_FF"), None, "not UTF-8");
    }

    #[test]
    fn prefixes() {
        assert!(valid_prefix("ironroot-"));
        assert!(valid_prefix(""));
        assert!(!valid_prefix("a/b"));
        assert!(!valid_prefix(&"a".repeat(65)));
    }

    #[test]
    fn mount_paths_cannot_break_the_request_line() {
        for good in ["transit", "pki", "team-a/transit", "auth.v2/approle_1"] {
            assert!(valid_mount(good), "{good}");
        }
        for bad in [
            "",
            "/transit",
            "transit/",
            "a//b",
            "a/../b",
            "tran sit",
            "transit\r\nX-Injected: 1",
            "transit?x=1",
            "transit#",
        ] {
            assert!(!valid_mount(bad), "{bad:?}");
        }
        assert!(!valid_mount(&"a".repeat(257)));
    }
}
