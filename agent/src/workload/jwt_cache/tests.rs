use super::*;

const NOW: i64 = 1_000_000;
/// Issued now, 5 minutes of life: served until NOW + 150.
const IAT: i64 = NOW;
const EXP: i64 = NOW + 300;

fn aud(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

fn put(c: &mut JwtSvidCache, entry: &str, a: &str, now: i64) {
    c.insert(entry, &aud(&[a]), format!("{entry}/{a}"), IAT, EXP, now);
}

fn has(c: &mut JwtSvidCache, entry: &str, a: &str) -> bool {
    c.get(entry, &aud(&[a]), NOW).is_some()
}

#[test]
fn a_token_is_served_until_half_its_life_then_dropped() {
    let mut c = JwtSvidCache::new(10, 10);
    c.insert("e1", &aud(&["db"]), "t".into(), IAT, EXP, NOW);
    assert_eq!(c.get("e1", &aud(&["db"]), NOW + 149).as_deref(), Some("t"));
    assert_eq!(c.get("e1", &aud(&["db"]), NOW + 150), None, "half life");
    assert!(c.is_empty(), "a stale token seen is dropped");
    assert_eq!(c.len_of("e1"), 0);
}

#[test]
fn tokens_already_stale_or_too_long_are_not_kept() {
    let mut c = JwtSvidCache::new(10, 10);
    c.insert("e1", &aud(&["db"]), "t".into(), IAT, EXP, NOW + 150);
    c.insert("e1", &aud(&["a"]), "t".into(), IAT, IAT, NOW);
    c.insert("e1", &aud(&["b"]), "t".into(), IAT, IAT - 10, NOW);
    c.insert(
        "e1",
        &aud(&["c"]),
        "x".repeat(MAX_CACHED_TOKEN_BYTES + 1),
        IAT,
        EXP,
        NOW,
    );
    assert!(c.is_empty());
    c.insert(
        "e1",
        &aud(&["c"]),
        "x".repeat(MAX_CACHED_TOKEN_BYTES),
        IAT,
        EXP,
        NOW,
    );
    assert_eq!(c.len(), 1);
}

#[test]
fn extreme_times_do_not_overflow() {
    let mut c = JwtSvidCache::new(10, 10);
    c.insert("e", &aud(&["a"]), "t".into(), i64::MIN, i64::MAX, 0);
    c.insert("e", &aud(&["b"]), "t".into(), i64::MAX, i64::MIN, 0);
    c.insert("e", &aud(&["c"]), "t".into(), 0, i64::MAX, i64::MAX);
    c.sweep(i64::MIN);
    c.sweep(i64::MAX);
    assert!(c.get("e", &aud(&["a"]), i64::MAX).is_none());
}

#[test]
fn the_audience_key_ignores_order_but_not_boundaries() {
    assert_eq!(
        audience_key(&aud(&["a", "b"])),
        audience_key(&aud(&["b", "a"]))
    );
    let keys = [
        audience_key(&aud(&["a", "b"])),
        audience_key(&aud(&["a,b"])),
        audience_key(&aud(&["ab"])),
        audience_key(&aud(&["a", "b", ""])),
        audience_key(&aud(&["", "ab"])),
        audience_key(&aud(&[])),
        audience_key(&aud(&["a", "a", "b"])),
    ];
    for (i, a) in keys.iter().enumerate() {
        for b in &keys[i + 1..] {
            assert_ne!(a, b);
        }
    }
    let mut c = JwtSvidCache::new(10, 10);
    c.insert("e", &aud(&["a", "b"]), "ab".into(), IAT, EXP, NOW);
    assert_eq!(c.get("e", &aud(&["b", "a"]), NOW).as_deref(), Some("ab"));
    assert_eq!(c.get("e", &aud(&["a,b"]), NOW), None);
    assert_eq!(c.get("other", &aud(&["a", "b"]), NOW), None, "per identity");
}

#[test]
fn replacing_a_token_does_not_grow_the_cache() {
    let mut c = JwtSvidCache::new(2, 2);
    for i in 0..10 {
        c.insert("e", &aud(&["a"]), format!("t{i}"), IAT, EXP, NOW);
    }
    assert_eq!(c.len(), 1);
    assert_eq!(c.get("e", &aud(&["a"]), NOW).as_deref(), Some("t9"));
}

#[test]
fn one_identity_evicts_its_own_least_recently_used_first() {
    let mut c = JwtSvidCache::new(100, 3);
    put(&mut c, "honest", "db", NOW);
    for a in ["a1", "a2", "a3"] {
        put(&mut c, "greedy", a, NOW);
    }
    assert!(has(&mut c, "greedy", "a1"), "a1 used: now a2 is the LRU");
    put(&mut c, "greedy", "a4", NOW);
    assert!(!has(&mut c, "greedy", "a2"), "the LRU went");
    assert!(has(&mut c, "greedy", "a1") && has(&mut c, "greedy", "a3"));
    assert_eq!(c.len_of("greedy"), 3);
    assert!(has(&mut c, "honest", "db"));
}

#[test]
fn a_flood_of_audiences_never_exceeds_the_capacity_nor_evicts_a_smaller_identity() {
    // 3 honest identities with 2 audiences each, 5 attacker identities
    // asking for 10,000 new audiences each, interleaved: the attackers could
    // hold 5 x 16 = 80 tokens, more than the 64 there are room for, but the
    // honest ones hold fewer than 64 / 8 each and so are never the victims.
    let mut c = JwtSvidCache::new(64, 16);
    for h in 0..3 {
        put(&mut c, &format!("honest{h}"), "db", NOW);
        put(&mut c, &format!("honest{h}"), "cache", NOW);
    }
    for i in 0..10_000 {
        for a in 0..5 {
            put(&mut c, &format!("attacker{a}"), &format!("aud-{i}"), NOW);
            assert!(c.len() <= 64, "{} tokens held", c.len());
            assert!(c.len_of(&format!("attacker{a}")) <= 16);
        }
    }
    assert_eq!(c.len(), 64);
    for h in 0..3 {
        assert!(has(&mut c, &format!("honest{h}"), "db"), "honest{h} db");
        assert!(
            has(&mut c, &format!("honest{h}"), "cache"),
            "honest{h} cache"
        );
    }
    // The latest audiences of the attackers are still served (the cache
    // stays useful for them, within their share).
    let served = (0..5)
        .filter(|a| has(&mut c, &format!("attacker{a}"), "aud-9999"))
        .count();
    assert_eq!(served, 5);
}

#[test]
fn an_identity_is_evicted_only_when_it_holds_the_most() {
    let mut c = JwtSvidCache::new(4, 4);
    put(&mut c, "a", "1", NOW);
    put(&mut c, "a", "2", NOW);
    put(&mut c, "a", "3", NOW);
    put(&mut c, "b", "1", NOW);
    // Full. b inserts: a holds the most, its LRU ("1") goes.
    put(&mut c, "b", "2", NOW);
    assert!(!has(&mut c, "a", "1"));
    assert_eq!((c.len_of("a"), c.len_of("b")), (2, 2));
    // Tie (2 and 2): the inserting identity pays.
    put(&mut c, "b", "3", NOW);
    assert_eq!((c.len_of("a"), c.len_of("b")), (2, 2));
    assert!(!has(&mut c, "b", "1"), "b's own LRU went");
    // A new identity with nothing yet takes from the largest.
    put(&mut c, "c", "1", NOW);
    assert_eq!(c.len(), 4);
    assert_eq!(c.len_of("c"), 1);
}

#[test]
fn stale_tokens_make_room_before_fresh_ones_are_evicted() {
    let mut c = JwtSvidCache::new(4, 4);
    // Two old tokens (half life at NOW + 10), two fresh.
    c.insert("old", &aud(&["1"]), "t".into(), NOW - 10, NOW + 30, NOW);
    c.insert("old", &aud(&["2"]), "t".into(), NOW - 10, NOW + 30, NOW);
    put(&mut c, "fresh", "1", NOW);
    put(&mut c, "fresh", "2", NOW);
    // Later: the old ones are stale; inserting sweeps them instead of
    // evicting a fresh token.
    let later = NOW + 20;
    c.insert("new", &aud(&["1"]), "t".into(), later, later + 300, later);
    assert_eq!(c.len_of("old"), 0);
    assert_eq!(c.len(), 3);
    assert_eq!(c.len_of("fresh"), 2);
}

#[test]
fn sweep_drops_only_stale_tokens_and_empty_identities() {
    let mut c = JwtSvidCache::new(10, 10);
    c.insert("a", &aud(&["1"]), "t".into(), NOW, NOW + 10, NOW);
    c.insert("b", &aud(&["1"]), "t".into(), NOW, NOW + 100, NOW);
    c.sweep(NOW + 5);
    assert_eq!(c.len(), 1);
    assert_eq!(c.len_of("a"), 0);
    assert!(!c.identities.contains_key("a"), "empty identity forgotten");
    assert_eq!(c.get("b", &aud(&["1"]), NOW + 5).as_deref(), Some("t"));
}

#[test]
fn capacity_one_still_serves_the_latest_token() {
    let mut c = JwtSvidCache::new(1, 5);
    for i in 0..100 {
        let a = format!("a{i}");
        put(&mut c, &format!("e{}", i % 7), &a, NOW);
        assert_eq!(c.len(), 1);
        assert!(has(&mut c, &format!("e{}", i % 7), &a));
    }
}
