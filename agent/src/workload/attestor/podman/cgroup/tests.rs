use super::*;

const ID: &str = "9830f857ee41aebf19c4f1e2ec1a833ce090ecb02ddd464977276a811bee7be7";
const OTHER: &str = "c43e29292be0c04c0c46a2416cc169639dd5103de1d4bdca1fb92e0f53075da1";
const POD: &str = "3889967858e95f3cd1cbc4e2656fe12f18862ec7436fb02d86e350ec7bb2230f";

/// Every controller of a cgroup v1 hybrid host, the way this machine shows it.
fn v1(path: &str) -> String {
    [
        "9:name=systemd",
        "8:pids",
        "7:blkio",
        "6:freezer",
        "5:devices",
        "4:memory",
        "3:cpuset",
        "2:cpuacct",
        "1:cpu",
        "0:",
    ]
    .iter()
    .map(|h| format!("{h}:{path}\n"))
    .collect()
}

fn rootful(id: &str) -> Option<(String, Option<u32>)> {
    Some((id.to_owned(), None))
}

/// The container and its owner, without the cgroup dirs.
fn who(text: &str) -> Option<(String, Option<u32>)> {
    locate_container(text).map(|c| (c.id, c.rootless_uid))
}

#[test]
fn cgroupfs_form_seen_here() {
    let text = v1(&format!("/libpod_parent/libpod-{ID}"));
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
    assert_eq!(who(&text), rootful(ID));
}

#[test]
fn cgroupfs_form_inside_a_pod() {
    let text = v1(&format!("/libpod_parent/{POD}/libpod-{ID}"));
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
}

#[test]
fn systemd_scope_form() {
    let text = format!("0::/machine.slice/libpod-{ID}.scope\n");
    assert_eq!(who(&text), rootful(ID));
    let v1_text = v1(&format!("/machine.slice/libpod-{ID}.scope"));
    assert_eq!(container_id_from_cgroup(&v1_text).as_deref(), Some(ID));
}

#[test]
fn systemd_scope_form_with_container_subgroup_and_pod_slice() {
    let text =
        format!("0::/machine.slice/machine-libpod_pod_{POD}.slice/libpod-{ID}.scope/container\n");
    assert_eq!(who(&text), rootful(ID));
}

#[test]
fn split_mode_payload_form() {
    let text = format!("0::/system.slice/app.service/libpod-payload-{ID}\n");
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
}

#[test]
fn rootless_form_carries_the_owner_uid() {
    let text = format!(
        "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
    );
    assert_eq!(who(&text), Some((ID.to_owned(), Some(1000))));
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
}

#[test]
fn rootless_on_cgroup_v1_only_the_systemd_hierarchy_names_it() {
    let text = format!(
        "5:memory:/user.slice/user-1001.slice/user@1001.service\n\
         1:name=systemd:/user.slice/user-1001.slice/user@1001.service/user.slice/libpod-{ID}.scope\n\
         0::/user.slice/user-1001.slice/user@1001.service\n"
    );
    assert_eq!(who(&text), Some((ID.to_owned(), Some(1001))));
}

#[test]
fn host_process_is_in_no_container() {
    assert_eq!(container_id_from_cgroup(&v1("/")), None);
    assert_eq!(
        container_id_from_cgroup("0::/system.slice/sshd.service\n"),
        None
    );
    assert_eq!(
        container_id_from_cgroup(
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/foo.scope\n"
        ),
        None
    );
    assert_eq!(container_id_from_cgroup(""), None);
}

#[test]
fn conmon_is_not_the_container() {
    let systemd = format!("0::/machine.slice/libpod-conmon-{ID}.scope\n");
    assert_eq!(container_id_from_cgroup(&systemd), None);
    // cgroupfs: conmon sits in a `conmon` cgroup beside the containers.
    let cgroupfs = v1(&format!("/libpod_parent/{POD}/conmon"));
    assert_eq!(container_id_from_cgroup(&cgroupfs), None);
    assert_eq!(container_id_from_cgroup(&v1("/libpod_parent/conmon")), None);
}

#[test]
fn pod_cgroups_are_not_containers() {
    assert_eq!(
        container_id_from_cgroup(&v1(&format!("/libpod_parent/{POD}"))),
        None
    );
    assert_eq!(
        container_id_from_cgroup(&format!(
            "0::/machine.slice/machine-libpod_pod_{POD}.slice\n"
        )),
        None
    );
}

#[test]
fn malformed_ids_do_not_match() {
    let short = &ID[..63];
    let upper = ID.to_uppercase();
    let non_hex = format!("{}g", &ID[..63]);
    let long = format!("{ID}0");
    for bad in [short, upper.as_str(), non_hex.as_str(), long.as_str(), ""] {
        for form in [
            format!("0::/libpod_parent/libpod-{bad}\n"),
            format!("0::/machine.slice/libpod-{bad}.scope\n"),
        ] {
            assert_eq!(container_id_from_cgroup(&form), None, "{form}");
        }
    }
    // The id must be the whole component.
    assert_eq!(
        container_id_from_cgroup(&format!("0::/machine.slice/libpod-{ID}.scope.bak\n")),
        None
    );
    assert_eq!(
        container_id_from_cgroup(&format!("0::/machine.slice/xlibpod-{ID}.scope\n")),
        None
    );
    // Lines that are not hierarchy:controllers:path are skipped.
    assert_eq!(container_id_from_cgroup(&format!("libpod-{ID}\n")), None);
}

#[test]
fn lines_naming_different_containers_match_nothing() {
    let text = format!("4:memory:/libpod_parent/libpod-{ID}\n0::/libpod_parent/libpod-{OTHER}\n");
    assert_eq!(container_id_from_cgroup(&text), None);
    // Same id, different owner: not something podman makes either.
    let text = format!(
        "1:name=systemd:/user.slice/user-1000.slice/user@1000.service/libpod-{ID}.scope\n\
         0::/machine.slice/libpod-{ID}.scope\n"
    );
    assert_eq!(locate_container(&text), None);
}

#[test]
fn outermost_container_wins_when_nested() {
    let text = format!("0::/libpod_parent/libpod-{ID}/libpod_parent/libpod-{OTHER}\n");
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
}

#[test]
fn cgroup_path_containing_colons_is_read_whole() {
    let text = format!("0::/odd:name/libpod_parent/libpod-{ID}\n");
    assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
}

#[test]
fn user_service_uid_parsing() {
    assert_eq!(user_service_uid("user@0.service"), Some(0));
    assert_eq!(user_service_uid("user@4294967295.service"), Some(u32::MAX));
    assert_eq!(user_service_uid("user@4294967296.service"), None);
    assert_eq!(user_service_uid("user@.service"), None);
    assert_eq!(user_service_uid("user@+1.service"), None);
    assert_eq!(user_service_uid("user-1000.slice"), None);
}

#[test]
fn the_container_cgroup_of_each_line_is_kept() {
    let text = format!(
        "4:cpu,cpuacct:/libpod_parent/libpod-{ID}\n\
         3:memory:/\n\
         0::/machine.slice/libpod-{ID}.scope/container/inner\n"
    );
    let c = locate_container(&text).expect("a container");
    assert_eq!(
        c.cgroups,
        vec![
            CgroupDir {
                controllers: "cpu,cpuacct".into(),
                path: format!("/libpod_parent/libpod-{ID}"),
            },
            CgroupDir {
                controllers: String::new(),
                path: format!("/machine.slice/libpod-{ID}.scope"),
            },
        ]
    );
}

/// A user may name cgroups in its own delegated subtree as it likes,
/// `user@0.service` included; the outermost `user@<uid>.service` is the one
/// systemd made, so it decides whose podman is asked.
#[test]
fn the_outermost_user_service_names_the_owner() {
    let text = format!(
        "0::/user.slice/user-1000.slice/user@1000.service/x.slice/user@0.service/libpod-{ID}.scope\n"
    );
    assert_eq!(who(&text), Some((ID.to_owned(), Some(1000))));
}
