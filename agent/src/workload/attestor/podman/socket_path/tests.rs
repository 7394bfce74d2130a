use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::os::unix::net::UnixListener;

use super::*;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A root-owned private dir with a listening socket at `a/b/podman.sock`.
struct Tree {
    dir: tempfile::TempDir,
    _listener: UnixListener,
    socket: PathBuf,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
    let socket = dir.path().join("a/b/podman.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    Tree {
        dir,
        _listener: listener,
        socket,
    }
}

fn refused(socket: &Path, owner: u32) -> String {
    match safe_socket_path(socket, owner) {
        Err(SocketRefused::Unsafe(why)) => why,
        other => panic!(
            "expected the rule to refuse {}, got {other:?}",
            socket.display()
        ),
    }
}

#[test]
fn root_owned_path_is_dialled_by_its_canonical_name() {
    if !is_root() {
        eprintln!("skipped: needs root-owned directories");
        return;
    }
    let t = tree();
    let canonical = std::fs::canonicalize(&t.socket).expect("canonical");
    assert_eq!(safe_socket_path(&t.socket, 0).expect("safe"), canonical);
    // Through a root-owned link, the target is what gets dialled.
    let link = t.dir.path().join("link.sock");
    symlink(&t.socket, &link).expect("symlink");
    assert_eq!(safe_socket_path(&link, 0).expect("safe"), canonical);
}

#[test]
fn a_directory_of_another_user_is_refused_unless_it_is_the_owners() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let t = tree();
    let b = t.dir.path().join("a/b");
    chown(&b, Some(1000), Some(1000)).expect("chown");
    let why = refused(&t.socket, 0);
    assert!(
        why.contains(&format!(
            "directory {}",
            b.canonicalize().unwrap().display()
        )),
        "{why}"
    );
    assert!(
        why.contains("owned by uid 1000") && why.contains("only root may own"),
        "{why}"
    );
    // The same socket is that user's own podman's: fine for a rootless
    // podman of uid 1000 (when the operator opted that uid in).
    assert!(safe_socket_path(&t.socket, 1000).is_ok());
    // ...and for nobody else's.
    let why = refused(&t.socket, 1001);
    assert!(why.contains("only root or uid 1001 may own"), "{why}");
}

#[test]
fn a_link_into_a_users_directory_is_refused() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let t = tree();
    let home = t.dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    chown(&home, Some(1000), Some(1000)).expect("chown");
    let theirs = home.join("podman.sock");
    let _l = UnixListener::bind(&theirs).expect("bind");
    let link = t.dir.path().join("a/b/podman-link.sock");
    symlink(&theirs, &link).expect("symlink");
    let why = refused(&link, 0);
    assert!(why.contains("owned by uid 1000"), "{why}");
}

#[test]
fn a_socket_of_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: chown needs root");
        return;
    }
    let t = tree();
    chown(&t.socket, Some(1000), None).expect("chown");
    let why = refused(&t.socket, 0);
    assert!(why.contains("podman.sock is owned by uid 1000"), "{why}");
}

#[test]
fn a_directory_others_can_write_is_refused_unless_sticky_and_roots() {
    if !is_root() {
        eprintln!("skipped: needs root-owned directories");
        return;
    }
    let t = tree();
    let a = t.dir.path().join("a");
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o775)).expect("chmod");
    let why = refused(&t.socket, 0);
    assert!(
        why.contains("writable by group or others (mode 775)"),
        "{why}"
    );
    // Like /tmp: anyone may add entries, nobody may replace root's.
    std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    assert!(safe_socket_path(&t.socket, 0).is_ok());
    // Sticky but owned by a user: that user can replace anything in it.
    chown(&a, Some(1000), None).expect("chown");
    assert!(refused(&t.socket, 0).contains("owned by uid 1000"));
}

#[test]
fn missing_or_non_socket_paths_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let gone = dir.path().join("gone.sock");
    assert!(matches!(
        safe_socket_path(&gone, 0),
        Err(SocketRefused::Unresolvable { path, .. }) if path == gone
    ));
    let file = dir.path().join("file.sock");
    std::fs::write(&file, "").expect("write");
    assert!(refused(&file, 0).contains("is not a socket"));
}
