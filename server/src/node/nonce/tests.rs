use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

#[test]
fn a_nonce_is_used_once() {
    let r = NonceRegistry::default();
    let n = r.issue(100, 130).unwrap();
    assert!(!r.was_used(&n));
    assert_eq!(r.consume(&n, 110), Ok(()));
    assert!(r.was_used(&n));
    assert_eq!(r.consume(&n, 111), Err(NonceError::Replayed));
}

#[test]
fn expired_and_unknown_nonces_are_refused() {
    let r = NonceRegistry::default();
    let n = r.issue(100, 130).unwrap();
    assert_eq!(r.consume(&n, 135), Err(NonceError::Expired(5)));
    assert_eq!(r.consume(&[0u8; 32], 100), Err(NonceError::Unknown));
    assert_eq!(r.consume(&[1, 2, 3], 100), Err(NonceError::Unknown));
}

#[test]
fn nonces_are_distinct_and_old_ones_are_forgotten() {
    let r = NonceRegistry::default();
    let a = r.issue(100, 130).unwrap();
    let b = r.issue(100, 130).unwrap();
    assert_ne!(a, b);
    // Issuing far later drops both from memory.
    let _ = r.issue(1000, 1030).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r.consume(&a, 1000), Err(NonceError::Unknown));
}

#[test]
fn a_full_registry_refuses_by_name_until_nonces_expire() {
    let r = NonceRegistry::new(3);
    for _ in 0..3 {
        r.issue(100, 130).unwrap();
    }
    let e = r.issue(100, 130).unwrap_err();
    assert_eq!(e, NoncesFull { max: 3 });
    assert!(
        e.to_string().contains("node_api.limits.max_pending_nonces"),
        "{e}"
    );
    // Used nonces still count (they name replays) until they expire.
    assert!(
        r.issue(130, 160).is_err(),
        "expiring at 130 is not expired at 130"
    );
    r.issue(131, 161).expect("the three expired at 130");
    assert_eq!(r.len(), 1);
}

#[test]
fn a_clock_that_goes_back_neither_panics_nor_forgets_live_nonces() {
    let r = NonceRegistry::new(10);
    let n = r.issue(1000, 1030).unwrap();
    r.issue(900, 930).unwrap();
    assert_eq!(r.consume(&n, 950), Ok(()));
}

/// The plain reference: every nonce in one map, expired ones dropped by a scan on issue.
struct Model {
    max: usize,
    nonces: HashMap<Nonce, (bool, i64)>,
}

impl Model {
    fn issue(&mut self, n: Nonce, now: i64, exp: i64) -> Result<(), NoncesFull> {
        self.nonces.retain(|_, (_, e)| *e >= now);
        if self.nonces.len() >= self.max {
            return Err(NoncesFull { max: self.max });
        }
        self.nonces.insert(n, (false, exp));
        Ok(())
    }

    fn consume(&mut self, n: &Nonce, now: i64) -> Result<(), NonceError> {
        match self.nonces.get_mut(n) {
            None => Err(NonceError::Unknown),
            Some((true, _)) => Err(NonceError::Replayed),
            Some((used, exp)) => {
                *used = true;
                if now > *exp {
                    Err(NonceError::Expired(now - *exp))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Random sequences of issue / consume / time passing, against [`Model`]: the same answer
/// every step, and the invariants of the module hold on their own terms.
#[test]
fn random_sequences_match_the_model_and_keep_the_invariants() {
    for seed in 0..300u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let max = rng.gen_range(1..12);
        let r = NonceRegistry::new(max);
        let mut model = Model {
            max,
            nonces: HashMap::new(),
        };
        // Every nonce ever issued: its expiry, and how often it was accepted.
        let mut issued: Vec<(Nonce, i64, u32)> = Vec::new();
        let mut now = 1_000i64;
        for step in 0..400 {
            let ctx = format!("seed {seed} step {step} now {now}");
            match rng.gen_range(0..10) {
                0..=3 => {
                    let mut n = [0u8; NONCE_LEN];
                    rng.fill(&mut n[..]);
                    let exp = now + rng.gen_range(0..8);
                    let got = r.insert(n, now, exp);
                    assert_eq!(got, model.issue(n, now, exp), "{ctx}");
                    if got.is_ok() {
                        issued.push((n, exp, 0));
                    }
                }
                4..=7 if !issued.is_empty() => {
                    let i = rng.gen_range(0..issued.len());
                    let (n, exp, accepted) = issued[i];
                    let got = r.consume(&n, now);
                    assert_eq!(got, model.consume(&n, now), "{ctx}");
                    if got.is_ok() {
                        assert_eq!(accepted, 0, "{ctx}: accepted twice");
                        assert!(now <= exp, "{ctx}: accepted after expiry");
                        issued[i].2 += 1;
                    } else if accepted == 0 && now <= exp {
                        panic!("{ctx}: an unused nonce was lost before expiry: {got:?}");
                    }
                    let used_in_model = model.nonces.get(&n).is_some_and(|(used, _)| *used);
                    assert_eq!(r.was_used(&n), used_in_model, "{ctx}");
                }
                4..=7 => {}
                8 => {
                    let mut bogus = [0u8; NONCE_LEN];
                    rng.fill(&mut bogus[..]);
                    assert_eq!(r.consume(&bogus, now), Err(NonceError::Unknown), "{ctx}");
                }
                _ => now += rng.gen_range(1..4),
            }
            assert_eq!(r.len(), model.nonces.len(), "{ctx}");
            assert!(r.len() <= max, "{ctx}: over the bound");
        }
    }
}
