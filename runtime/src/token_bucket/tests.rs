use super::*;

const RATE: Rate = Rate {
    per_second: 2.0,
    burst: 3,
};

fn at(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

#[test]
fn a_burst_then_the_sustained_rate() {
    let t0 = Instant::now();
    let mut b = TokenBucket::full(RATE, t0);
    for _ in 0..3 {
        b.try_take(RATE, t0).expect("within the burst");
    }
    let wait = b.try_take(RATE, t0).expect_err("burst spent");
    assert_eq!(wait, Duration::from_millis(500), "one token per 500 ms");
    // Half a token later: still refused, and told the rest of the wait.
    let wait = b.try_take(RATE, at(t0, 250)).expect_err("half a token");
    assert_eq!(wait, Duration::from_millis(250));
    b.try_take(RATE, at(t0, 500)).expect("one token accrued");
    assert!(b.try_take(RATE, at(t0, 500)).is_err());
}

#[test]
fn a_long_idle_refills_only_up_to_the_burst() {
    let t0 = Instant::now();
    let mut b = TokenBucket::full(RATE, t0);
    for _ in 0..3 {
        b.try_take(RATE, t0).unwrap();
    }
    let later = t0 + Duration::from_secs(1_000_000);
    for _ in 0..3 {
        b.try_take(RATE, later).expect("refilled");
    }
    assert!(
        b.try_take(RATE, later).is_err(),
        "never more than the burst"
    );
}

#[test]
fn a_time_before_the_last_look_adds_nothing() {
    let t0 = Instant::now() + Duration::from_secs(10);
    let mut b = TokenBucket::full(RATE, t0);
    for _ in 0..3 {
        b.try_take(RATE, t0).unwrap();
    }
    // An earlier instant (as if the clock went back): no refill, no panic, and the bucket
    // does not move its clock back either.
    let earlier = t0 - Duration::from_secs(5);
    assert!(b.try_take(RATE, earlier).is_err());
    assert!(
        b.try_take(RATE, at(t0, 400)).is_err(),
        "0.8 token at +400 ms"
    );
    b.try_take(RATE, at(t0, 500)).expect("1 token at +500 ms");
}

#[test]
fn a_tiny_rate_gives_a_long_but_finite_wait() {
    let slow = Rate {
        per_second: 1e-300,
        burst: 1,
    };
    let t0 = Instant::now();
    let mut b = TokenBucket::full(slow, t0);
    b.try_take(slow, t0).unwrap();
    assert_eq!(b.try_take(slow, t0), Err(Duration::MAX));
    // Full "in a year" at most: a table keeps it, nothing overflows.
    assert_eq!(b.full_at(slow), t0 + FULL_AT_HORIZON);
}

#[test]
fn a_batch_takes_all_its_tokens_or_none() {
    let rate = Rate {
        per_second: 10.0,
        burst: 10,
    };
    let t0 = Instant::now();
    let mut b = TokenBucket::full(rate, t0);
    b.try_take_n(rate, 7, t0).expect("7 of 10");
    // 5 asked, 3 there: refused, and nothing is taken.
    assert_eq!(
        b.try_take_n(rate, 5, t0),
        Err(Duration::from_millis(200)),
        "2 missing at 10/s"
    );
    b.try_take_n(rate, 3, t0)
        .expect("the refused batch took nothing");
    assert!(b.try_take(rate, t0).is_err());
    b.try_take_n(rate, 5, at(t0, 500)).expect("5 accrued");
}

#[test]
fn more_than_the_burst_is_never_granted() {
    let t0 = Instant::now();
    let mut b = TokenBucket::full(RATE, t0);
    assert_eq!(b.try_take_n(RATE, 4, t0), Err(Duration::MAX));
    b.try_take_n(RATE, 3, t0).expect("the refusal took nothing");
    let much_later = t0 + Duration::from_secs(3600);
    assert_eq!(b.try_take_n(RATE, 4, much_later), Err(Duration::MAX));
    // Zero tokens always pass.
    b.try_take_n(RATE, 0, t0).expect("nothing asked");
}

#[test]
fn full_at_is_when_the_spent_tokens_are_back() {
    let t0 = Instant::now();
    let mut b = TokenBucket::full(RATE, t0);
    assert_eq!(b.full_at(RATE), t0, "an unused bucket is full now");
    b.try_take_n(RATE, 2, t0).unwrap();
    // 2 tokens at 2/s: full again in 1 s.
    assert_eq!(b.full_at(RATE), at(t0, 1000));
    assert!(!b.is_full(RATE, at(t0, 999)));
    assert!(b.is_full(RATE, at(t0, 1000)));
    // A look part-way does not move the instant.
    let mut c = TokenBucket::full(RATE, t0);
    c.try_take_n(RATE, 3, t0).unwrap();
    assert!(c.try_take_n(RATE, 3, at(t0, 500)).is_err());
    assert_eq!(c.full_at(RATE), at(t0, 1500));
}

#[test]
fn a_check_takes_nothing_and_says_the_same_wait_as_a_take() {
    let t0 = Instant::now();
    let mut table = keyed::BoundedBuckets::new(RATE, 4);
    // A key never seen has a full bucket; checking it remembers nothing.
    table.check(&"a", 3, t0).expect("full");
    assert!(table.is_empty());
    assert_eq!(
        table.check(&"a", 4, t0),
        Err(keyed::Refusal::Rate(Duration::MAX)),
        "more than the burst never passes"
    );
    for _ in 0..3 {
        table.check(&"a", 1, t0).expect("a check leaves the tokens");
        table.try_take(&"a", 1, t0).expect("within the burst");
    }
    assert_eq!(
        table.check(&"a", 1, t0),
        Err(keyed::Refusal::Rate(Duration::from_millis(500)))
    );
    assert_eq!(
        table.check(&"a", 1, t0),
        table.try_take(&"a", 1, t0),
        "a refused take and a check agree"
    );
    table
        .check(&"a", 1, at(t0, 500))
        .expect("one token accrued");
    table
        .check(&"a", 1, at(t0, 500))
        .expect("and checking again still sees it");
    table.try_take(&"a", 1, at(t0, 500)).expect("taken once");
    assert!(table.check(&"a", 1, at(t0, 500)).is_err());
}
