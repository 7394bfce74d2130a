use std::os::unix::fs::chown;

use super::*;

/// The mount table of a cgroup v1 hybrid host (this form), and a v2 host.
const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
";

fn dir(controllers: &str, path: &str) -> CgroupDir {
    CgroupDir {
        controllers: controllers.into(),
        path: path.into(),
    }
}

#[test]
fn cgroup_mounts_are_found_and_mapped_per_hierarchy() {
    let mounts = parse_mountinfo(HYBRID);
    assert_eq!(mounts.len(), 4, "tmpfs is not a cgroup mount: {mounts:?}");
    let at = |c: &str, p: &str| locate(&dir(c, p), &mounts);
    assert_eq!(
        at("memory", "/libpod_parent/libpod-x"),
        Some(PathBuf::from(
            "/sys/fs/cgroup/memory/libpod_parent/libpod-x"
        ))
    );
    assert_eq!(
        at("cpu,cpuacct", "/a"),
        Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a"))
    );
    assert_eq!(
        at("name=systemd", "/a"),
        Some(PathBuf::from("/sys/fs/cgroup/systemd/a"))
    );
    assert_eq!(
        at("", "/a"),
        Some(PathBuf::from("/sys/fs/cgroup/unified/a"))
    );
    assert_eq!(at("pids", "/a"), None, "not mounted");
}

#[test]
fn a_mount_of_a_sub_tree_is_mapped_from_its_root() {
    let mounts =
        parse_mountinfo("50 40 0:38 /machine.slice /mnt/cg\\040v2 rw - cgroup2 cgroup2 rw\n");
    assert_eq!(mounts[0].point, PathBuf::from("/mnt/cg v2"));
    assert_eq!(
        locate(&dir("", "/machine.slice/libpod-x.scope"), &mounts),
        Some(PathBuf::from("/mnt/cg v2/libpod-x.scope"))
    );
    // Outside the mounted sub-tree, or a longer name sharing its prefix.
    assert_eq!(locate(&dir("", "/system.slice/a"), &mounts), None);
    assert_eq!(locate(&dir("", "/machine.slice2/a"), &mounts), None);
}

#[test]
fn escapes_in_mountinfo_are_decoded() {
    assert_eq!(unescape(r"/a\040b\011c\134d"), "/a b\tc\\d");
    assert_eq!(unescape(r"/x\0"), r"/x\0");
    assert_eq!(unescape(r"/x\999"), r"/x\999");
}

/// A cgroup tree of its own: `memory` and a unified hierarchy under a temp
/// dir, described by a mountinfo file there.
fn fake_tree() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().expect("tempdir");
    let d = t.path().display();
    let mountinfo = t.path().join("mountinfo");
    std::fs::write(
        &mountinfo,
        format!(
            "1 0 0:1 / {d}/memory rw - cgroup cgroup rw,memory\n\
             2 0 0:2 / {d}/unified rw - cgroup2 cgroup2 rw\n"
        ),
    )
    .expect("mountinfo");
    for h in ["memory", "unified"] {
        std::fs::create_dir_all(t.path().join(h).join("libpod_parent/libpod-x/inner"))
            .expect("mkdir");
    }
    (t, mountinfo)
}

fn container() -> ContainerRef {
    ContainerRef {
        id: "x".into(),
        rootless_uid: None,
        cgroups: vec![
            dir("memory", "/libpod_parent/libpod-x"),
            dir("", "/libpod_parent/libpod-x"),
        ],
    }
}

#[test]
fn the_owner_is_read_from_the_containers_own_cgroup() {
    let (t, mountinfo) = fake_tree();
    let me = nix::unistd::geteuid().as_raw();
    let (uid, at) = cgroup_owner(&container(), &mountinfo).expect("owner");
    assert_eq!(uid, me);
    assert_eq!(at, t.path().join("memory/libpod_parent/libpod-x"));

    if nix::unistd::geteuid().is_root() {
        // Whoever owns cgroups made inside the container does not matter.
        chown(
            t.path().join("unified/libpod_parent/libpod-x/inner"),
            Some(1000),
            None,
        )
        .expect("chown");
        assert_eq!(cgroup_owner(&container(), &mountinfo).expect("owner").0, me);
        // Two hierarchies disagreeing is no container podman made.
        chown(
            t.path().join("unified/libpod_parent/libpod-x"),
            Some(1000),
            None,
        )
        .expect("chown");
        match cgroup_owner(&container(), &mountinfo) {
            Err(CgroupOwnerError::Disagree {
                first_uid,
                other_uid,
                ..
            }) => assert_eq!((first_uid, other_uid), (me, 1000)),
            other => panic!("expected Disagree, got {other:?}"),
        }
    }
}

#[test]
fn no_visible_cgroup_is_an_error_naming_them() {
    let (_t, mountinfo) = fake_tree();
    let gone = ContainerRef {
        id: "y".into(),
        rootless_uid: None,
        cgroups: vec![dir("memory", "/libpod_parent/libpod-y"), dir("pids", "/a")],
    };
    let err = cgroup_owner(&gone, &mountinfo).expect_err("not visible");
    let msg = err.to_string();
    assert!(matches!(err, CgroupOwnerError::NotVisible { .. }));
    assert!(
        msg.contains("memory:/libpod_parent/libpod-y") && msg.contains("pids:/a"),
        "{msg}"
    );
    let err = cgroup_owner(&container(), Path::new("/nonexistent/mountinfo")).unwrap_err();
    assert!(matches!(err, CgroupOwnerError::Mounts { .. }), "{err}");
}
