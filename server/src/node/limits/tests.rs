use super::*;

fn small() -> NodeLimitsConfig {
    NodeLimitsConfig {
        attestations_per_ip_per_second: 1.0,
        attestation_burst: 2,
        signings_per_ip_per_second: 10.0,
        signing_burst: 100,
        max_tracked_addresses: 3,
        max_connections: 2,
        max_watch_streams: 2,
        max_attestations_in_flight: 3,
        max_x509_svids_per_batch: 100,
        max_jwt_audiences: 2,
        ..NodeLimitsConfig::default()
    }
}

fn peer(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

#[test]
fn the_defaults_pass_their_own_check() {
    NodeLimitsConfig::default().check().unwrap();
    small().check().unwrap();
    for (bad, option) in [
        (
            NodeLimitsConfig {
                admin_refusal_burst: 0,
                ..small()
            },
            "node_api.limits.admin_refusal_burst",
        ),
        (
            NodeLimitsConfig {
                admin_refusals_per_ip_per_second: 0.0,
                ..small()
            },
            "node_api.limits.admin_refusals_per_ip_per_second",
        ),
    ] {
        let e = bad.check().unwrap_err();
        assert!(e.to_string().contains(option), "{e}");
    }
}

#[test]
fn attestation_is_limited_per_address_and_signing_is_not_affected() {
    let l = NodeLimits::new(NodeLimitsConfig {
        max_attestations_in_flight: 100,
        ..small()
    });
    let t0 = Instant::now();
    let a = peer("192.0.2.1:5000");
    let _p1 = l.admit_attestation(a, t0).unwrap();
    // Another port of the same host: the same budget.
    let _p2 = l.admit_attestation(peer("192.0.2.1:5001"), t0).unwrap();
    let e = l.admit_attestation(a, t0).unwrap_err();
    assert!(
        matches!(e, LimitExceeded::AttestationRate { retry: RetryIn(w), .. }
            if w == Duration::from_secs(1)),
        "{e:?}"
    );
    let text = e.to_string();
    for words in [
        "192.0.2.1",
        "node_api.limits.attestations_per_ip_per_second",
        "node_api.limits.attestation_burst",
        "retry in 1000 ms",
    ] {
        assert!(text.contains(words), "{text}");
    }
    let status = e.to_status();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(status.message(), text);
    // Signing from the same address, and attesting from another, are unaffected.
    l.admit_signing(a, 100, t0)
        .expect("signing has its own budget");
    let _p3 = l
        .admit_attestation(peer("192.0.2.2:5000"), t0)
        .expect("another address");
    // A second later the bucket has one token again.
    let _p4 = l
        .admit_attestation(a, t0 + Duration::from_secs(1))
        .expect("refilled");
}

#[test]
fn a_batch_costs_one_signing_token_per_csr() {
    let l = NodeLimits::new(small());
    let t0 = Instant::now();
    let a = peer("[2001:db8::1]:443");
    l.admit_signing(a, 60, t0).unwrap();
    let e = l.admit_signing(a, 50, t0).unwrap_err();
    assert!(
        matches!(e, LimitExceeded::SigningRate { count: 50, retry: RetryIn(w), .. }
            if w == Duration::from_secs(1)),
        "{e:?}"
    );
    assert!(e.to_string().contains("2001:db8::1"), "{e}");
    assert!(
        e.to_string()
            .contains("node_api.limits.signings_per_ip_per_second"),
        "{e}"
    );
    l.admit_signing(a, 40, t0)
        .expect("the refused batch took nothing");
}

#[test]
fn an_ipv4_mapped_address_shares_the_ipv4_budget() {
    let l = NodeLimits::new(small());
    let t0 = Instant::now();
    let _a = l.admit_attestation(peer("192.0.2.7:1"), t0).unwrap();
    let _b = l
        .admit_attestation(peer("[::ffff:192.0.2.7]:2"), t0)
        .unwrap();
    let e = l.admit_attestation(peer("192.0.2.7:3"), t0).unwrap_err();
    assert!(e.to_string().starts_with("192.0.2.7 "), "{e}");
}

#[test]
fn a_full_address_table_refuses_new_addresses_by_name() {
    let l = NodeLimits::new(small());
    let t0 = Instant::now();
    for i in 1..=3 {
        drop(
            l.admit_attestation(peer(&format!("198.51.100.{i}:1")), t0)
                .unwrap(),
        );
    }
    let e = l.admit_attestation(peer("198.51.100.4:1"), t0).unwrap_err();
    assert_eq!(
        e,
        LimitExceeded::TooManyAddresses {
            ip: "198.51.100.4".parse().unwrap(),
            what: "attestation",
            max: 3
        }
    );
    assert!(
        e.to_string()
            .contains("node_api.limits.max_tracked_addresses"),
        "{e}"
    );
    assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
    // A second later every bucket is full again and forgotten.
    drop(
        l.admit_attestation(peer("198.51.100.4:1"), t0 + Duration::from_secs(1))
            .expect("the table emptied"),
    );
}

#[test]
fn server_wide_caps_hold_until_their_permits_drop() {
    let l = NodeLimits::new(NodeLimitsConfig {
        attestation_burst: 100,
        ..small()
    });
    let t0 = Instant::now();
    let held: Vec<_> = (0..3)
        .map(|_| l.admit_attestation(peer("192.0.2.1:1"), t0).unwrap())
        .collect();
    let e = l.admit_attestation(peer("192.0.2.9:1"), t0).unwrap_err();
    assert_eq!(e, LimitExceeded::AttestationsInFlight { max: 3 });
    assert!(
        e.to_string()
            .contains("node_api.limits.max_attestations_in_flight"),
        "{e}"
    );
    drop(held);
    let _p = l
        .admit_attestation(peer("192.0.2.9:1"), t0)
        .expect("a slot is free again");

    let w1 = l.admit_watch().unwrap();
    let _w2 = l.admit_watch().unwrap();
    let e = l.admit_watch().unwrap_err();
    assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
    assert!(
        e.to_string().contains("node_api.limits.max_watch_streams"),
        "{e}"
    );
    drop(w1);
    let _w3 = l.admit_watch().expect("a stream ended");

    let from = "192.0.2.1:1".parse().unwrap();
    let c1 = l.admit_connection(from).unwrap();
    let _c2 = l.admit_connection(from).unwrap();
    let e = l.admit_connection(from).unwrap_err();
    assert!(
        e.to_string().contains("node_api.limits.max_connections"),
        "{e}"
    );
    drop(c1);
    let _c3 = l.admit_connection(from).expect("a connection closed");
}

#[test]
fn oversize_requests_are_invalid_and_name_the_option() {
    let l = NodeLimits::new(small());
    l.check_x509_batch(100).unwrap();
    let e = l.check_x509_batch(101).unwrap_err();
    assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.to_string(),
        "101 CSRs in one batch; the limit is 100 (node_api.limits.max_x509_svids_per_batch)"
    );
    l.check_jwt_audiences(2).unwrap();
    let e = l.check_jwt_audiences(3).unwrap_err();
    assert_eq!(e.to_status().code(), tonic::Code::InvalidArgument);
    assert!(
        e.to_string().contains("node_api.limits.max_jwt_audiences"),
        "{e}"
    );
}

#[test]
fn waits_are_said_rounded_up_to_the_millisecond() {
    assert_eq!(
        RetryIn(Duration::from_micros(1)).to_string(),
        "retry in 1 ms"
    );
    assert_eq!(
        RetryIn(Duration::from_millis(250)).to_string(),
        "retry in 250 ms"
    );
    assert!(RetryIn(Duration::MAX).to_string().starts_with("never"));
}

/// A certificate (DER) for `id` on a fresh key, as a CA would issue an SVID: a caller can
/// have many of them for one ID.
fn svid_for(id: &str) -> Vec<u8> {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.subject_alt_names = vec![rcgen::SanType::URI(id.try_into().unwrap())];
    params.self_signed(&key).unwrap().der().to_vec()
}

#[test]
fn refused_admin_calls_spend_a_budget_per_address_and_spiffe_id_and_authorized_ones_do_not() {
    let l = NodeLimits::new(NodeLimitsConfig {
        admin_refusals_per_ip_per_second: 1.0,
        admin_refusal_burst: 3,
        ..small()
    });
    let t0 = Instant::now();
    let a = peer("192.0.2.7:4000");
    let (probe_svid, admin_svid) = (
        svid_for("spiffe://example.org/workload/probe"),
        svid_for("spiffe://example.org/admin"),
    );
    let (probe, admin) = (Some(probe_svid.as_slice()), Some(admin_svid.as_slice()));
    // Authorized calls are admitted and charge nothing, however many.
    for _ in 0..50 {
        l.admit_admin_call(&AdminPeer::of(a, admin), t0)
            .expect("no refusal yet");
    }
    // Three refusals spend the burst; the next call is not even checked.
    for _ in 0..3 {
        l.admit_admin_call(&AdminPeer::of(a, probe), t0)
            .expect("within the budget");
        l.note_admin_refusal(&AdminPeer::of(a, probe), t0);
    }
    let e = l
        .admit_admin_call(&AdminPeer::of(a, probe), t0)
        .unwrap_err();
    assert!(
        matches!(e, LimitExceeded::AdminRefusalRate { retry: RetryIn(w), .. }
            if w == Duration::from_secs(1)),
        "{e:?}"
    );
    let text = e.to_string();
    for words in [
        "192.0.2.7",
        "node_api.limits.admin_refusals_per_ip_per_second",
        "node_api.limits.admin_refusal_burst",
        "retry in 1000 ms",
    ] {
        assert!(text.contains(words), "{text}");
    }
    assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
    // The admin on the same host, a caller without a certificate there, another address,
    // and the other limits of the same address are unaffected.
    l.admit_admin_call(&AdminPeer::of(a, admin), t0)
        .expect("the admin's own budget");
    l.admit_admin_call(&AdminPeer::of(a, None), t0)
        .expect("no certificate: its own budget");
    l.admit_admin_call(&AdminPeer::of(peer("192.0.2.8:4000"), probe), t0)
        .expect("another address");
    l.admit_signing(a, 1, t0)
        .expect("signing has its own budget");
    // A new certificate for the same ID (a new key, signed at the signing rate) is the
    // same caller: it brings no fresh budget.
    let fresh = svid_for("spiffe://example.org/workload/probe");
    assert_ne!(fresh, probe_svid);
    l.admit_admin_call(&AdminPeer::of(a, Some(&fresh)), t0)
        .expect_err("a new certificate for a spent ID is still refused");
    // A refilled token admits one more check.
    l.admit_admin_call(&AdminPeer::of(a, probe), t0 + Duration::from_secs(1))
        .expect("refilled");
}
