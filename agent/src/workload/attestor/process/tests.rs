use super::*;

#[test]
fn args_are_joined_with_spaces() {
    assert_eq!(
        join_args(b"python3\0-c\0print(1)\0", 100),
        Ok(Some("python3 -c print(1)".into()))
    );
    // An empty argument stays visible as a double space.
    assert_eq!(join_args(b"a\0\0b\0", 100), Ok(Some("a  b".into())));
    assert_eq!(join_args(b"", 100), Ok(None));
    assert_eq!(join_args(b"\0", 100), Ok(None));
}

#[test]
fn long_or_non_utf8_args_give_no_selector() {
    assert!(join_args(b"abcdef\0", 5).is_err());
    assert_eq!(join_args(b"abcde\0", 5), Ok(Some("abcde".into())));
    assert!(join_args(b"\xff\xfe\0", 100).is_err());
}

#[test]
fn cgroup_lines_split_into_controllers_and_path() {
    assert_eq!(
        parse_cgroup_line("0::/system.slice/foo.service"),
        Some(("", "/system.slice/foo.service"))
    );
    assert_eq!(parse_cgroup_line("4:memory:/a:b"), Some(("memory", "/a:b")));
    assert_eq!(
        parse_cgroup_line("9:name=systemd:/"),
        Some(("name=systemd", "/"))
    );
    assert_eq!(parse_cgroup_line("garbage"), None);
    assert_eq!(parse_cgroup_line("1:cpu:relative"), None);
}

#[test]
fn systemd_unit_is_the_first_component_after_slices() {
    assert_eq!(
        systemd_unit("/system.slice/nginx.service"),
        Some("nginx.service")
    );
    assert_eq!(
        systemd_unit("/system.slice/system-getty.slice/getty@tty1.service"),
        Some("getty@tty1.service")
    );
    assert_eq!(
        systemd_unit("/machine.slice/libpod-0123abcd.scope/container"),
        Some("libpod-0123abcd.scope")
    );
    assert_eq!(systemd_unit("/init.scope"), Some("init.scope"));
    // A user session belongs to the user manager's unit.
    assert_eq!(
        systemd_unit("/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.scope"),
        Some("user@1000.service")
    );
    // A delegated unit cannot pass for a unit it names below itself.
    assert_eq!(
        systemd_unit("/system.slice/foo.service/evil.service"),
        Some("foo.service")
    );
    assert_eq!(systemd_unit("/"), None);
    assert_eq!(systemd_unit("/user.slice"), None);
    assert_eq!(systemd_unit("/process_api/7c21"), None);
    assert_eq!(systemd_unit("/docker/abc/x.service"), None);
    assert_eq!(systemd_unit("/.service"), None);
}

#[test]
fn namespace_links_give_their_inode() {
    assert_eq!(namespace_inode("mnt:[4026531841]"), Some(4026531841));
    assert_eq!(namespace_inode("cgroup:[1]"), Some(1));
    assert_eq!(namespace_inode("mnt:4026531841"), None);
    assert_eq!(namespace_inode("mnt:[x]"), None);
}

#[test]
fn config_defaults_and_unknown_fields() {
    let c: ProcessAttestorConfig = toml::from_str("").expect("empty config");
    assert_eq!(c, ProcessAttestorConfig::default());
    assert_eq!(c.args_max_bytes, 1024);
    assert_eq!(c.sha256_max_bytes, 64 * 1024 * 1024);
    assert!(toml::from_str::<ProcessAttestorConfig>("args_max = 1").is_err());
}
