use super::*;

#[test]
fn pad_left_pads_and_strips_leading_zeros() {
    assert_eq!(pad(&[1, 2], 4), Some(vec![0, 0, 1, 2]));
    assert_eq!(pad(&[0, 0, 0, 0, 0, 7], 4), Some(vec![0, 0, 0, 7]));
    assert_eq!(pad(&[1, 2, 3, 4, 5], 4), None);
    assert_eq!(pad(&[], 2), Some(vec![0, 0]));
}

#[test]
fn the_hash_buffer_is_the_pc_client_minimum() {
    assert_eq!(MAX_SIGNED_MESSAGE, 1024);
}
