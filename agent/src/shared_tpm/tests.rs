use super::*;

#[test]
fn one_handle_per_tcti_in_a_process() {
    let a = SharedTpm::new("swtpm:host=127.0.0.1,port=1");
    let b = SharedTpm::new("swtpm:host=127.0.0.1,port=1");
    let c = SharedTpm::new("swtpm:host=127.0.0.1,port=3");
    assert!(Arc::ptr_eq(&a.0, &b.0));
    assert!(!Arc::ptr_eq(&a.0, &c.0));
    drop((a, b));
    // Once nobody holds it, a new handle is made (and the old entry is swept).
    let d = SharedTpm::new("swtpm:host=127.0.0.1,port=1");
    assert_eq!(d.tcti(), "swtpm:host=127.0.0.1,port=1");
}

#[test]
fn a_bad_tcti_fails_on_use_with_its_name_and_leases_balance() {
    let t = SharedTpm::new("nonsense:x");
    let lease = t.lease();
    let e = t
        .with(|_| Ok::<(), DeviceError>(()))
        .expect_err("no such TCTI");
    assert!(e.to_string().contains("nonsense:x"), "{e}");
    assert_eq!(lock_state(&t.0).leases, 1);
    drop(lease);
    assert_eq!(lock_state(&t.0).leases, 0);
}
