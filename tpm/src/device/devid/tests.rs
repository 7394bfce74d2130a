use super::*;
use crate::device::srk::{is_storage_parent, srk_template};

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
