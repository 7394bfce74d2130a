//! The swtpm harness itself: ready when returned, gone after drop (also after a panic).

use std::net::TcpStream;

use ironroot_testkit::swtpm::{SwtpmOptions, SwtpmState};

/// A live process has a command line; a dead or zombie one has none.
fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[test]
fn spawned_swtpm_answers_and_is_killed_by_pid_on_drop() {
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    assert!(state.ca_root_cert.is_file() && state.issuer_cert.is_file());
    let tpm = state.spawn();
    assert!(tpm.tcti().starts_with("swtpm:host=127.0.0.1,port="));
    TcpStream::connect(("127.0.0.1", tpm.port() + 1)).expect("control port answers");
    let (pid, log) = (tpm.pid(), tpm.log_path().to_path_buf());
    assert!(alive(pid));
    assert!(log.starts_with(ironroot_testkit::target_dir().join("test-logs")));
    drop(tpm);
    assert!(!alive(pid), "swtpm {pid} survived its handle");
}

#[test]
fn swtpm_is_killed_when_the_test_panics() {
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let tpm = state.spawn();
        tx.send(tpm.pid()).expect("send pid");
        panic!("test failure while swtpm runs");
    })
    .join();
    assert!(r.is_err());
    let pid = rx.recv().expect("pid");
    assert!(!alive(pid), "swtpm {pid} survived a panicking test");
}

#[test]
fn two_tpms_from_one_state_are_independent() {
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let (a, b) = (state.spawn(), state.spawn());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.state_dir(), b.state_dir());
}
