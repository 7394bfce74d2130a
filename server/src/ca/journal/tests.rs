use super::*;

fn slot(label: &str, status: SlotStatus, nb: i64, na: i64) -> JwtSlot {
    JwtSlot {
        key_label: label.into(),
        key_id: label.into(),
        status,
        public_key_der: vec![],
        not_before: nb,
        not_after: na,
    }
}

#[test]
fn empty_journal_creates_an_active_key() {
    assert_eq!(plan::<JwtSlot>(&[], 100), vec![Step::CreateActive]);
}

#[test]
fn follows_the_half_and_sixth_schedule() {
    // lifetime 600: prepare at 300, activate at 500.
    let a = slot("a", SlotStatus::Active, 0, 600);
    assert!(plan(std::slice::from_ref(&a), 299).is_empty());
    assert_eq!(plan(std::slice::from_ref(&a), 300), vec![Step::Prepare]);
    let p = slot("b", SlotStatus::Prepared, 300, 900);
    let slots = vec![a.clone(), p.clone()];
    assert!(plan(&slots, 499).is_empty());
    assert_eq!(plan(&slots, 500), vec![Step::Activate]);
    let mut slots = slots;
    assert!(activate_prepared(&mut slots, 500));
    assert_eq!(slots[0].status, SlotStatus::Old);
    assert_eq!(slots[1].status, SlotStatus::Active);
    // the old key stays published until it expires, then is pruned
    assert!(plan(&slots, 599).is_empty());
    // at 600 the old key expires and the new one (300..900) reaches half life
    assert_eq!(
        plan(&slots, 600),
        vec![
            Step::Prepare,
            Step::Prune {
                key_label: "a".into()
            }
        ]
    );
}

#[test]
fn expired_active_with_prepared_activates_and_prunes() {
    let slots = vec![
        slot("a", SlotStatus::Active, 0, 600),
        slot("b", SlotStatus::Prepared, 300, 900),
    ];
    assert_eq!(
        plan(&slots, 700),
        vec![
            Step::Activate,
            Step::Prune {
                key_label: "a".into()
            }
        ]
    );
}

#[test]
fn everything_expired_starts_over() {
    let slots = vec![slot("a", SlotStatus::Active, 0, 600)];
    assert_eq!(
        plan(&slots, 10_000),
        vec![
            Step::CreateActive,
            Step::Prune {
                key_label: "a".into()
            }
        ]
    );
}

#[test]
fn journal_round_trips_as_json() {
    let j = CaJournal {
        version: JOURNAL_VERSION,
        x509: vec![X509Slot {
            key_label: "x".into(),
            status: SlotStatus::Active,
            cert_der: vec![1, 2, 3],
            upstream_chain: vec![vec![4]],
            upstream_roots: vec![vec![5]],
            not_before: 1,
            not_after: 2,
        }],
        jwt: vec![slot("j", SlotStatus::Prepared, 1, 2)],
        bundle_sequence: 7,
    };
    let s = serde_json::to_vec(&j).unwrap();
    assert_eq!(serde_json::from_slice::<CaJournal>(&s).unwrap(), j);
}
