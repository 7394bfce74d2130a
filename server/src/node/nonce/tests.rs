use super::*;

#[test]
fn a_nonce_is_used_once() {
    let r = NonceRegistry::default();
    let n = r.issue(100, 130);
    assert!(!r.was_used(&n));
    assert_eq!(r.consume(&n, 110), Ok(()));
    assert!(r.was_used(&n));
    assert_eq!(r.consume(&n, 111), Err(NonceError::Replayed));
}

#[test]
fn expired_and_unknown_nonces_are_refused() {
    let r = NonceRegistry::default();
    let n = r.issue(100, 130);
    assert_eq!(r.consume(&n, 135), Err(NonceError::Expired(5)));
    assert_eq!(r.consume(&[0u8; 32], 100), Err(NonceError::Unknown));
    assert_eq!(r.consume(&[1, 2, 3], 100), Err(NonceError::Unknown));
}

#[test]
fn nonces_are_distinct_and_old_ones_are_forgotten() {
    let r = NonceRegistry::default();
    let a = r.issue(100, 130);
    let b = r.issue(100, 130);
    assert_ne!(a, b);
    // Issuing far later drops both from memory.
    let _ = r.issue(1000, 1030);
    assert_eq!(r.consume(&a, 1000), Err(NonceError::Unknown));
}
