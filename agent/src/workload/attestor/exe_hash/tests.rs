use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

use super::*;

#[test]
fn hash_matches_the_file_and_is_cached() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("sleepy");
    std::fs::copy("/bin/sleep", &exe).expect("copy sleep");
    let want = hex::encode(Sha256::digest(std::fs::read(&exe).expect("read")));
    let mut child = Command::new(&exe)
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let caller = Caller::from_pid(child.id() as i32).expect("caller");
    let h = ExeHasher::new();
    assert_eq!(h.cached(), 0);
    assert_eq!(
        h.sha256(&caller, DEFAULT_SHA256_MAX_BYTES).expect("hash"),
        ExeDigest::Sha256(want.clone())
    );
    assert_eq!(h.cached(), 1);
    assert_eq!(
        h.sha256(&caller, DEFAULT_SHA256_MAX_BYTES).expect("hash"),
        ExeDigest::Sha256(want)
    );
    assert_eq!(h.cached(), 1);

    let size = std::fs::metadata(&exe).expect("stat").len();
    assert_eq!(
        h.sha256(&caller, size - 1).expect("cap"),
        ExeDigest::TooLarge {
            size,
            max: size - 1
        }
    );
    assert!(matches!(
        h.sha256(&caller, size).expect("at the cap"),
        ExeDigest::Sha256(_)
    ));
    let _ = child.kill();
    let _ = child.wait();
}

/// The attack the ctime in the key stops: the owner of a binary rewrites it
/// in place (same inode, same size) and sets its mtime back. A cache keyed
/// by (dev, inode, mtime, size) alone would keep vouching for the old hash.
#[test]
fn a_binary_rewritten_in_place_with_its_mtime_reset_is_hashed_again() {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    use std::os::unix::fs::MetadataExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("tool");
    std::fs::copy("/bin/sleep", &exe).expect("copy");
    let h = ExeHasher::new();

    let hash_running = |h: &ExeHasher| {
        let mut child = Command::new(&exe)
            .arg("30")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn");
        let caller = Caller::from_pid(child.id() as i32).expect("caller");
        let got = h.sha256(&caller, DEFAULT_SHA256_MAX_BYTES).expect("hash");
        let _ = child.kill();
        let _ = child.wait();
        got
    };

    let first = hash_running(&h);
    let before = std::fs::metadata(&exe).expect("stat");

    // Change one byte of the usage text: same size, still runs.
    let mut bytes = std::fs::read(&exe).expect("read");
    let at = bytes
        .windows(7)
        .position(|w| w == b"Usage: ")
        .expect("usage text in sleep");
    bytes[at + 4] = b'f';
    std::fs::write(&exe, &bytes).expect("rewrite in place");
    let atime = TimeSpec::new(before.atime(), before.atime_nsec());
    let mtime = TimeSpec::new(before.mtime(), before.mtime_nsec());
    utimensat(None, &exe, &atime, &mtime, UtimensatFlags::FollowSymlink).expect("reset mtime");
    let after = std::fs::metadata(&exe).expect("stat");
    assert_eq!(
        (after.ino(), after.len(), after.mtime(), after.mtime_nsec()),
        (
            before.ino(),
            before.len(),
            before.mtime(),
            before.mtime_nsec()
        )
    );

    let second = hash_running(&h);
    let want = hex::encode(Sha256::digest(&bytes));
    assert_eq!(second, ExeDigest::Sha256(want));
    assert_ne!(first, second);
}
