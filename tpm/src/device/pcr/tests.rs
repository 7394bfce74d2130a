use super::*;

#[test]
fn selection_is_sorted_deduplicated_and_keeps_bank_order() {
    let sel = check_selection(
        "t",
        &[
            (HashAlg::Sha256, vec![7, 0, 7, 3]),
            (HashAlg::Sha1, vec![1]),
        ],
    )
    .map_err(|e| e.to_string());
    assert_eq!(
        sel,
        Ok(vec![
            (HashAlg::Sha256, vec![0, 3, 7]),
            (HashAlg::Sha1, vec![1])
        ])
    );
    let list = selection_list(&sel.unwrap_or_default()).map_err(|e| e.to_string());
    let algs: Vec<HashingAlgorithm> = list
        .map(|l| {
            l.get_selections()
                .iter()
                .map(|s| s.hashing_algorithm())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(algs, [HashingAlgorithm::Sha256, HashingAlgorithm::Sha1]);
}

#[test]
fn bad_selections_are_refused_with_the_reason() {
    for (sel, words) in [
        (vec![], "between 1 and 16"),
        (vec![(HashAlg::Sha256, vec![24])], "not below 24"),
        (vec![(HashAlg::Sha256, vec![])], "no PCR selected"),
        (
            vec![(HashAlg::Sha1, vec![0]), (HashAlg::Sha1, vec![1])],
            "selected twice",
        ),
        (
            vec![(HashAlg::Unknown(0x0099), vec![0])],
            "alg_0x0099 is not a hash algorithm",
        ),
    ] {
        let e = check_selection("Quote", &sel).err().map(|e| e.to_string());
        let e = e.unwrap_or_default();
        assert!(
            e.starts_with("Quote: invalid argument") && e.contains(words),
            "{e}"
        );
    }
}
