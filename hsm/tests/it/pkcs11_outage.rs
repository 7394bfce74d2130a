//! The token made unavailable at runtime, against real components: SoftHSM2 behind
//! `p11-kit server` (a network HSM whose connection is cut by killing its `p11-kit-remote` by
//! PID, then brought back on the same socket), and SoftHSM2 in-process with its sessions
//! closed under the key manager. Signing fails with a clear error while the token is gone,
//! health says so at once, and the manager recovers by itself, without being reopened.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use ironroot_hsm::{
    HsmError, KeyAlgorithm, KeyManager, KeyManagerHealth, Pkcs11Config, Pkcs11KeyManager,
};
use ironroot_testkit::p11kit::{P11KitServer, CLIENT_MODULE};

use crate::support::raw::Raw;
use crate::support::{sha256, verify_raw, Hsm, TOKEN};

/// SoftHSM token [`TOKEN`] behind p11-kit, and a manager on it through the client module.
fn remote_setup(test: &str) -> (Hsm, P11KitServer, Pkcs11KeyManager) {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    let remote = P11KitServer::start(test, &hsm, TOKEN);
    remote.use_in_this_process();
    let cfg = Pkcs11Config {
        module: CLIENT_MODULE.into(),
        ..hsm.config(TOKEN)
    };
    let km = Pkcs11KeyManager::open(&cfg).expect("open the token through p11-kit");
    (hsm, remote, km)
}

/// Signs until it works (the manager reconnected), with a deadline; the signature made.
fn sign_when_back(km: &dyn KeyManager, msg: &[u8], within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    loop {
        match km.sign_digest("ca", &sha256(msg)) {
            Ok(sig) => return sig,
            Err(e) => {
                assert!(
                    e.is_unreachable(),
                    "only 'unreachable' while recovering: {e}"
                );
                assert!(
                    Instant::now() < deadline,
                    "not recovered {within:?} after the HSM came back: {e}"
                );
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

fn unreachable_since(h: KeyManagerHealth) -> (SystemTime, String) {
    match h {
        KeyManagerHealth::Unreachable { since, reason } => (since, reason),
        other => panic!("health must say unreachable, says {other}"),
    }
}

#[test]
fn remote_hsm_cut_fails_clearly_reports_at_once_and_recovers_without_reopening() {
    let (_hsm, mut remote, km) = remote_setup("hsm_remote_cut");
    let info = km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
    let sig = km.sign_digest("ca", &sha256(b"before")).expect("sign");
    verify_raw(&info, b"before", &sig).expect("verify");
    assert_eq!(km.health(), KeyManagerHealth::Available);
    assert_eq!(
        remote.remote_pids().len(),
        1,
        "one p11-kit-remote serves the manager"
    );

    remote.cut();
    // Before any signature fails: the health check's own probe sees it.
    let (since, reason) = unreachable_since(km.health());
    assert!(reason.contains("CKR_DEVICE_ERROR"), "{reason}");

    let err = km
        .sign_digest("ca", &sha256(b"during"))
        .expect_err("no signature while the HSM is gone");
    let HsmError::Unreachable {
        token,
        since: err_since,
        ..
    } = &err
    else {
        panic!("expected Unreachable, got {err:?}");
    };
    assert_eq!(token, TOKEN);
    assert_eq!(*err_since, since, "one outage, one start time");
    let msg = err.to_string();
    assert!(
        msg.contains("PKCS#11 token 'ironroot' unreachable since") && msg.contains("reconnecting"),
        "{msg}"
    );
    // Other calls fail the same way (and do not claim the key is gone).
    let find = km.find("ca").expect_err("find while gone");
    assert!(find.is_unreachable(), "{find}");

    // Reconnection attempts keep failing while it is down; the outage's start stays put.
    thread::sleep(Duration::from_secs(2));
    let (still, reason) = unreachable_since(km.health());
    assert_eq!(still, since);
    assert!(
        reason.contains("'ironroot'"),
        "the latest attempt's reason names the token it looks for: {reason}"
    );

    remote.restore();
    let sig = sign_when_back(&km, b"after", Duration::from_secs(15));
    verify_raw(&info, b"after", &sig).expect("same key signs after recovery");
    assert_eq!(km.health(), KeyManagerHealth::Available);
    assert_eq!(km.find("ca").expect("find after recovery"), Some(info));
}

#[test]
fn signers_running_through_a_cut_and_a_recovery_see_only_good_signatures_or_unreachable() {
    let (_hsm, mut remote, km) = remote_setup("hsm_remote_cut_concurrent");
    let info = km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
    let km: Arc<dyn KeyManager> = Arc::new(km);
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let unreachable = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..3)
        .map(|t| {
            let (km, info, stop) = (km.clone(), info.clone(), stop.clone());
            let (ok, unreachable) = (ok.clone(), unreachable.clone());
            thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let msg = format!("worker {t} message {i}");
                    match km.sign_digest("ca", &sha256(msg.as_bytes())) {
                        Ok(sig) => {
                            verify_raw(&info, msg.as_bytes(), &sig).expect("a good signature");
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) if e.is_unreachable() => {
                            unreachable.fetch_add(1, Ordering::SeqCst);
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("worker {t}: unexpected error {e}"),
                    }
                    i += 1;
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    remote.cut();
    thread::sleep(Duration::from_secs(1));
    let failed_during = unreachable.load(Ordering::SeqCst);
    remote.restore();
    let before = ok.load(Ordering::SeqCst);
    sign_when_back(km.as_ref(), b"probe", Duration::from_secs(15));
    // Every worker gets through again (not just the probe).
    let deadline = Instant::now() + Duration::from_secs(5);
    while ok.load(Ordering::SeqCst) < before + 30 {
        assert!(Instant::now() < deadline, "workers did not resume");
        thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    // A call in flight when the connection died may never return (p11-kit's client waits
    // for a reply another thread was to read); the manager abandoned it to recover. Such a
    // worker is left behind; every other one finishes cleanly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stuck = 0;
    for w in workers {
        while !w.is_finished() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        if w.is_finished() {
            w.join().expect("no worker panicked");
        } else {
            stuck += 1;
        }
    }
    assert!(
        stuck < 3,
        "at least one worker signs again after the recovery"
    );
    assert!(failed_during > 0, "the cut was seen by the workers");
}

/// Two managers of one module and one remote token (as a CA key manager and an upstream on
/// one HSM): one cut loses both; one re-initialisation serves both (the second sees the new
/// generation and only opens sessions), and neither re-initialises under the other afterwards.
#[test]
fn two_managers_of_one_module_both_recover_from_one_cut() {
    let (hsm, mut remote, a) = remote_setup("hsm_remote_cut_two_managers");
    let cfg = Pkcs11Config {
        module: CLIENT_MODULE.into(),
        ..hsm.config(TOKEN)
    };
    let b = Pkcs11KeyManager::open(&cfg).expect("second manager");
    let ia = a.generate("ca", KeyAlgorithm::EcP256).expect("gen a");
    let ib = b.find("ca").expect("find b").expect("same token");
    assert_eq!(ia, ib);
    remote.cut();
    for km in [&a, &b] {
        let e = km.sign_digest("ca", &sha256(b"x")).expect_err("gone");
        assert!(e.is_unreachable(), "{e}");
    }
    remote.restore();
    for km in [&a, &b] {
        let sig = sign_when_back(km, b"back", Duration::from_secs(15));
        verify_raw(&ia, b"back", &sig).expect("verify");
    }
    // Stable afterwards: no manager re-initialises the module under the other.
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        for km in [&a, &b] {
            let sig = km.sign_digest("ca", &sha256(b"steady")).expect("steady");
            verify_raw(&ia, b"steady", &sig).expect("verify");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// SoftHSM in this process, every session of the token closed under the manager
/// (C_CloseAllSessions, which also ends the login): the next signature works on new
/// sessions, logged in again from the PIN source, and the manager never reports an outage.
#[test]
fn sessions_closed_under_the_manager_are_replaced_at_the_next_call() {
    let hsm = Hsm::new();
    hsm.init_token(TOKEN);
    let km = Pkcs11KeyManager::open(&hsm.config(TOKEN)).expect("open");
    let info = km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
    km.sign_digest("ca", &sha256(b"before")).expect("sign");
    let mut raw = Raw::open(TOKEN);
    raw.close_all_sessions();
    let sig = km
        .sign_digest("ca", &sha256(b"after close"))
        .expect("sessions closed under the manager are replaced");
    verify_raw(&info, b"after close", &sig).expect("verify");
    assert_eq!(km.health(), KeyManagerHealth::Available);
    // Both pooled sessions were replaced: signing keeps working on either.
    for i in 0..4 {
        let msg = format!("again {i}");
        let sig = km.sign_digest("ca", &sha256(msg.as_bytes())).expect("sign");
        verify_raw(&info, msg.as_bytes(), &sig).expect("verify");
    }
    assert_eq!(km.find("ca").expect("find"), Some(info));
}
