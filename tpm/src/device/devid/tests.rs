use super::*;

#[test]
fn pad_left_pads_and_strips_leading_zeros() {
    assert_eq!(pad(&[1, 2], 4), Some(vec![0, 0, 1, 2]));
    assert_eq!(pad(&[0, 0, 0, 0, 0, 7], 4), Some(vec![0, 0, 0, 7]));
    assert_eq!(pad(&[1, 2, 3, 4, 5], 4), None);
    assert_eq!(pad(&[], 2), Some(vec![0, 0]));
}

#[test]
fn templates_build() {
    let devid = devid_template().map_err(|e| e.to_string());
    assert!(devid.as_ref().map(is_devid).unwrap_or(false), "{devid:?}");
    let srk = srk_template().map_err(|e| e.to_string());
    assert!(
        srk.as_ref().map(is_storage_parent).unwrap_or(false),
        "{srk:?}"
    );
}
