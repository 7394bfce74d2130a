use sha2::Digest as _;

use super::*;

#[test]
fn qualified_name_hashes_parent_qn_and_name_with_the_names_algorithm() {
    let parent = [0x40, 0x00, 0x00, 0x0b];
    let name = [&[0x00, 0x0b][..], &[0xaa; 32]].concat();
    let qn = qualified_name(&parent, &name);
    let want = [
        &[0x00, 0x0b][..],
        &sha2::Sha256::digest([&parent[..], &name].concat()),
    ]
    .concat();
    assert_eq!(qn, Some(want));
    assert_eq!(
        qualified_name(&parent, &[0x00, 0x99, 1]),
        None,
        "unknown hash"
    );
    assert_eq!(qualified_name(&parent, &[0x00]), None, "too short");
}

#[test]
fn persistent_handle_range() {
    assert!(check_persistent_handle("t", 0x8100_0001).is_ok());
    assert!(check_persistent_handle("t", 0x817f_ffff).is_ok());
    for h in [0x8180_0000, 0x8000_0000, 0x0100_0000] {
        assert!(check_persistent_handle("t", h).is_err(), "{h:#x}");
    }
}
