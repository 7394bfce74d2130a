//! The index against the reference scan, over random histories: whatever
//! sequence of creates, updates and deletes the feed carries, the index
//! answers every agent exactly as a scan of the same entries would, and a
//! reload from a snapshot answers the same as following the feed.

use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::index::{authorized_scan, EntryIndex, IndexError};
use crate::store::{AttestedNode, Change, ChangeEvent, Revision, Snapshot};

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn id(path: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org{path}")).unwrap()
}

const AGENTS: [&str; 3] = [
    "/spire/agent/tpm/a",
    "/spire/agent/tpm/b",
    "/spire/agent/join_token/c",
];
const ALIASES: [&str; 2] = ["/alias/rack1", "/alias/rack2"];
const NODE_SELECTORS: [&str; 4] = ["tpm:pcr:1", "tpm:pcr:2", "tpm:model:x", "rack:r1"];

fn random_selectors(rng: &mut StdRng, pool: &[&str]) -> Vec<Selector> {
    let mut s: Vec<Selector> = (0..rng.gen_range(1..=2))
        .map(|_| Selector::parse(pool[rng.gen_range(0..pool.len())]).unwrap())
        .collect();
    s.sort();
    s.dedup();
    s
}

fn random_entry(rng: &mut StdRng, n: usize) -> RegistrationEntry {
    let server = SpiffeId::server(&td());
    let parent = match rng.gen_range(0..6) {
        0..=2 => id(AGENTS[rng.gen_range(0..AGENTS.len())]),
        3 | 4 => id(ALIASES[rng.gen_range(0..ALIASES.len())]),
        _ => server.clone(),
    };
    let (spiffe_id, selectors) = if parent == server {
        // An alias: its SPIFFE ID is one agents' entries may hang under.
        (
            id(ALIASES[rng.gen_range(0..ALIASES.len())]),
            random_selectors(rng, &NODE_SELECTORS),
        )
    } else {
        (
            id(&format!("/w/{}", rng.gen_range(0..5))),
            random_selectors(rng, &["unix:uid:1", "unix:uid:2"]),
        )
    };
    RegistrationEntry::from_spec(
        format!("{n:04}-{}", rng.gen::<u16>()),
        EntrySpec {
            spiffe_id,
            parent_id: parent,
            selectors,
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            // Some expired, some expiring later, most never.
            expires_at: [0, 0, 0, 50, 500][rng.gen_range(0..5)],
            federates_with: vec![],
        },
        0,
        1,
    )
}

fn node(agent: &str, selectors: Vec<Selector>) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(agent),
        attestor: "tpm".into(),
        selectors,
        serial_number: "01".into(),
        expires_at: 0,
        banned: false,
        first_attested_at: 0,
        last_attested_at: 0,
    }
}

fn assert_same_answers(ix: &EntryIndex, model: &[RegistrationEntry], rng: &mut StdRng) {
    let server = SpiffeId::server(&td());
    for agent in AGENTS {
        let sel = random_selectors(rng, &NODE_SELECTORS);
        let now = 100;
        let got: Vec<&str> = ix
            .authorized(&id(agent), &sel, now)
            .into_iter()
            .map(|e| e.entry.id.as_str())
            .collect();
        let want = authorized_scan(model, &id(agent), &sel, &server, now);
        let want: Vec<&str> = want.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, want, "agent {agent} with {sel:?}");
        for e in model {
            let one = ix.authorized_entry(&id(agent), &sel, &e.id, now).is_some();
            assert_eq!(
                one,
                want.contains(&e.id.as_str()),
                "entry {} for {agent}",
                e.id
            );
        }
    }
}

#[test]
fn the_index_answers_as_a_scan_over_random_histories() {
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let server = SpiffeId::server(&td());
        let mut ix = EntryIndex::load(server.clone(), Snapshot::default());
        let mut model: Vec<RegistrationEntry> = Vec::new();
        let mut revision = 0u64;
        for step in 0..120 {
            let change = match rng.gen_range(0..4) {
                0 | 1 => {
                    let e = random_entry(&mut rng, step);
                    model.push(e.clone());
                    Change::EntryPut { entry: e }
                }
                2 if !model.is_empty() => {
                    // Update: new parent and selectors, same id.
                    let i = rng.gen_range(0..model.len());
                    let mut e = random_entry(&mut rng, step);
                    e.id = model[i].id.clone();
                    model[i] = e.clone();
                    Change::EntryPut { entry: e }
                }
                _ if !model.is_empty() => {
                    let i = rng.gen_range(0..model.len());
                    let e = model.remove(i);
                    Change::EntryDeleted { id: e.id }
                }
                _ => continue,
            };
            revision += 1;
            ix.apply(&[ChangeEvent {
                revision: Revision(revision),
                change,
            }])
            .unwrap();
            assert_eq!(ix.revision(), Revision(revision));
            assert_eq!(ix.entry_count(), model.len());
            assert_same_answers(&ix, &model, &mut rng);
        }
        // A reload from a snapshot of the same state answers the same.
        let reloaded = EntryIndex::load(
            server,
            Snapshot {
                revision: Revision(revision),
                entries: model.clone(),
                ..Snapshot::default()
            },
        );
        let mut rng2 = StdRng::seed_from_u64(seed ^ 0xff);
        assert_same_answers(&reloaded, &model, &mut rng2);
    }
}

#[test]
fn a_gap_in_the_feed_is_refused_and_nothing_after_it_applied() {
    let mut ix = EntryIndex::load(SpiffeId::server(&td()), Snapshot::default());
    let mut rng = StdRng::seed_from_u64(7);
    let e1 = random_entry(&mut rng, 1);
    let e3 = random_entry(&mut rng, 3);
    let events = [
        ChangeEvent {
            revision: Revision(1),
            change: Change::EntryPut { entry: e1 },
        },
        ChangeEvent {
            revision: Revision(3),
            change: Change::EntryPut { entry: e3 },
        },
    ];
    assert_eq!(
        ix.apply(&events),
        Err(IndexError::Gap {
            at: Revision(1),
            next: Revision(3)
        })
    );
    assert_eq!(ix.revision(), Revision(1));
    assert_eq!(ix.entry_count(), 1);
    // Events already applied are skipped, not a gap.
    assert!(ix.apply(&events[..1]).is_ok());
}

#[test]
fn touched_names_the_agents_a_change_concerns() {
    let server = SpiffeId::server(&td());
    let mut ix = EntryIndex::load(server.clone(), Snapshot::default());
    let mut rng = StdRng::seed_from_u64(1);
    let mut entry = |parent: SpiffeId, spiffe: &str, sel: &str| {
        let mut e = random_entry(&mut rng, 0);
        e.spec.parent_id = parent;
        e.spec.spiffe_id = id(spiffe);
        e.spec.selectors = vec![Selector::parse(sel).unwrap()];
        e
    };
    let under_agent = entry(id(AGENTS[0]), "/w/1", "unix:uid:1");
    let alias = entry(server.clone(), ALIASES[0], "tpm:model:x");
    let under_alias = entry(id(ALIASES[0]), "/w/2", "unix:uid:2");
    let mut r = 0;
    let mut put = |ix: &mut EntryIndex, e: &RegistrationEntry| {
        r += 1;
        ix.apply(&[ChangeEvent {
            revision: Revision(r),
            change: Change::EntryPut { entry: e.clone() },
        }])
        .unwrap()
    };
    let t = put(&mut ix, &under_agent);
    assert!(!t.aliases);
    assert_eq!(t.parents.iter().collect::<Vec<_>>(), vec![&id(AGENTS[0])]);
    // The alias entry itself, then an entry under the alias: every agent may be concerned.
    assert!(put(&mut ix, &alias).aliases);
    assert!(put(&mut ix, &under_alias).aliases);
    // Moving an entry from one agent to another concerns both.
    let mut moved = under_agent.clone();
    moved.spec.parent_id = id(AGENTS[1]);
    let t = put(&mut ix, &moved);
    assert!(t.parents.contains(&id(AGENTS[0])) && t.parents.contains(&id(AGENTS[1])));
    // A node change names the node.
    r += 1;
    let t = ix
        .apply(&[ChangeEvent {
            revision: Revision(r),
            change: Change::NodePut {
                node: node(AGENTS[2], vec![]),
            },
        }])
        .unwrap();
    assert!(t.nodes.contains(&id(AGENTS[2])));
    assert!(ix.node(&id(AGENTS[2])).is_some());
}

#[test]
fn deleting_an_unreadable_record_clears_its_report() {
    let unreadable = |what: &'static str, key: &str| crate::store::Unreadable {
        what,
        key: key.into(),
        reason: "expected value at line 1 column 2".into(),
    };
    let mut ix = EntryIndex::load(
        SpiffeId::server(&td()),
        Snapshot {
            revision: Revision(5),
            unreadable: vec![
                unreadable("entry", "bad-entry"),
                unreadable("attested node", "spiffe://example.org/spire/agent/tpm/x"),
                unreadable("federated bundle", "other.org"),
            ],
            ..Snapshot::default()
        },
    );
    assert_eq!(ix.unreadable().len(), 3);
    ix.apply(&[
        ChangeEvent {
            revision: Revision(6),
            change: Change::EntryDeleted {
                id: "bad-entry".into(),
            },
        },
        ChangeEvent {
            revision: Revision(7),
            change: Change::BundleDeleted {
                trust_domain: TrustDomain::parse("other.org").unwrap(),
            },
        },
    ])
    .unwrap();
    let left: Vec<&str> = ix.unreadable().iter().map(|u| u.what).collect();
    assert_eq!(left, vec!["attested node"]);
    ix.apply(&[ChangeEvent {
        revision: Revision(8),
        change: Change::NodeDeleted {
            id: id("/spire/agent/tpm/x"),
        },
    }])
    .unwrap();
    assert!(ix.unreadable().is_empty());
}

/// The index holds every entry in an `Arc`: that allocation (two counters and the entry)
/// must stay within jemalloc's 256-byte size class, the next one being 320 bytes, i.e.
/// 6 MB more at 100,000 entries. A field added to `RegistrationEntry` (or a SPIFFE ID
/// grown back to two `String`s) that crosses the line fails here, so the cost is a
/// decision rather than an accident.
#[test]
fn an_indexed_entry_fits_the_allocators_256_byte_class() {
    let arc_inner = std::mem::size_of::<RegistrationEntry>() + 2 * std::mem::size_of::<usize>();
    assert!(
        arc_inner <= 256,
        "Arc<RegistrationEntry> allocates {arc_inner} bytes: past jemalloc's 256-byte class"
    );
    assert_eq!(
        std::mem::size_of::<SpiffeId>(),
        32,
        "a SPIFFE ID is two boxed strs"
    );
}
