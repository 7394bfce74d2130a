use std::fs;
use std::process::{Command, Stdio};

use super::credentials::{self, Credentials};
use super::proc_stat::{parse_stat, ProcStat};
use super::*;

fn sleeper() -> std::process::Child {
    Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sleep")
}

#[test]
fn stat_fields_are_found_after_the_last_parenthesis() {
    // A command name may hold spaces and ')'; field 22 must still be found.
    let mut text = String::from("4242 (evil) 1 2 (x) S 17");
    for n in 5..=21 {
        text.push_str(&format!(" {n}"));
    }
    text.push_str(" 987654 23 24\n");
    let s = parse_stat(&text).expect("parses");
    assert_eq!(
        s,
        ProcStat {
            state: 'S',
            ppid: 17,
            start_time: 987654
        }
    );
}

#[test]
fn malformed_stat_is_an_error() {
    assert!(parse_stat("4242 no parenthesis S 1").is_err());
    assert!(parse_stat("4242 (short) S 1 2 3").is_err());
    assert!(parse_stat("4242 (bad) S notanumber 2").is_err());
}

#[test]
fn a_live_process_is_still_the_same() {
    let mut child = sleeper();
    let caller = Caller::from_pid(child.id() as i32).expect("caller");
    assert!(caller.start_time() > 0);
    caller.still_same().expect("same process");
    let _ = child.kill();
    let _ = child.wait();
}

/// PID reuse cannot be forced without privileges, so this builds the
/// situation it leads to: /proc/PID describes a process whose start time is
/// not the one recorded (as after the caller exited and its number was
/// handed out again). `still_same` must refuse it.
#[test]
fn a_different_start_time_is_a_replaced_process() {
    let mut child = sleeper();
    let mut caller = Caller::from_pid(child.id() as i32).expect("caller");
    let real = caller.start_time;
    caller.start_time = real - 1;
    match caller.still_same() {
        Err(CallerError::Replaced {
            recorded, current, ..
        }) => {
            assert_eq!(recorded, real - 1);
            assert_eq!(current, real);
        }
        other => panic!("expected Replaced, got {other:?}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_exited_process_is_gone_zombie_or_reaped() {
    let mut child = sleeper();
    let caller = Caller::from_pid(child.id() as i32).expect("caller");
    child.kill().expect("kill");
    // Not reaped yet: a zombie, which is just as gone.
    let mut waited = false;
    for _ in 0..200 {
        if matches!(caller.still_same(), Err(CallerError::ProcessGone { .. })) {
            waited = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(waited, "zombie still reported alive");
    child.wait().expect("reap");
    assert!(matches!(
        caller.still_same(),
        Err(CallerError::ProcessGone { .. })
    ));
    assert!(matches!(
        Caller::from_pid(caller.pid),
        Err(CallerError::ProcessGone { .. })
    ));
}

#[test]
fn status_credentials_are_the_effective_ids_and_sorted_groups() {
    let text = "Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t100\t27\t27\t27\nGroups:\t27 4 27 100 \n";
    let c = credentials::parse_status(text).expect("parses");
    assert_eq!(c.euid, 0);
    assert_eq!(c.egid, 27);
    assert_eq!(c.groups, vec![4, 27, 100]);
    let empty = credentials::parse_status("Uid:\t1 1 1 1\nGid:\t2 2 2 2\nGroups:\n").expect("none");
    assert!(empty.groups.is_empty());
    assert!(credentials::parse_status("Uid:\t1 1 1 1\nGroups:\n")
        .unwrap_err()
        .to_string()
        .contains("Gid"));
    assert!(credentials::parse_status("Uid:\t1\nGid:\t2 2\nGroups:\n")
        .unwrap_err()
        .to_string()
        .contains("effective"));
    assert!(
        credentials::parse_status("Uid:\t1 1\nGid:\t2 2\nGroups:\t4 x\n")
            .unwrap_err()
            .to_string()
            .contains("Groups")
    );
}

#[test]
fn credential_changes_are_named() {
    let at_connect = Credentials {
        euid: 0,
        egid: 0,
        groups: vec![0],
    };
    let now = Credentials {
        euid: 65534,
        egid: 0,
        groups: vec![],
    };
    let change = now.change_from(&at_connect).expect("a change");
    assert!(change.contains("effective UID 65534 (was 0)"), "{change}");
    assert!(change.contains("supplementary groups"), "{change}");
    assert!(!change.contains("GID 0"), "{change}");
    assert_eq!(at_connect.change_from(&at_connect.clone()), None);
}

/// A python process that waits for a line on stdin, then execs `program`
/// with `args` (argv[0] is `program`).
fn exec_on_demand(program: &str, args: &[&str]) -> std::process::Child {
    let script = "import os, sys\nsys.stdin.readline()\nos.execv(sys.argv[1], sys.argv[1:])\n";
    Command::new("/usr/bin/python3")
        .args(["-c", script, program])
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn python")
}

fn trigger_and_wait(child: &mut std::process::Child, done: impl Fn() -> bool) {
    use std::io::Write;
    child
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("trigger exec");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "exec not seen");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn exec_of_another_file_is_refused() {
    let mut child = exec_on_demand("/usr/bin/sleep", &["30"]);
    let pid = child.id() as i32;
    let caller = Caller::from_pid(pid).expect("caller");
    caller.still_same().expect("same before exec");
    assert!(caller.executable().path().starts_with("/usr/bin"));
    let recorded = caller.executable().path().to_owned();
    trigger_and_wait(&mut child, || {
        fs::read_link(format!("/proc/{pid}/exe")).ok() == Some("/usr/bin/sleep".into())
    });
    match caller.still_same() {
        Err(CallerError::ExeChanged {
            pid: p,
            connected,
            now,
        }) => {
            assert_eq!(p, pid);
            assert_eq!(connected, recorded);
            assert_eq!(now.as_deref(), Some(std::path::Path::new("/usr/bin/sleep")));
        }
        other => panic!("expected ExeChanged, got {other:?}"),
    }
    // The recorded facts are what they were: the attestors never see sleep.
    assert_eq!(caller.executable().path(), recorded);
    assert!(caller.is_alive().is_ok(), "still alive, only changed");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn exec_of_the_same_file_is_refused_too() {
    let python = fs::canonicalize("/usr/bin/python3").expect("python");
    let python = python.to_str().expect("utf-8");
    let mut child = exec_on_demand(python, &["-c", "import time; time.sleep(30)"]);
    let pid = child.id() as i32;
    let caller = Caller::from_pid(pid).expect("caller");
    caller.still_same().expect("same before exec");
    // Before the exec the command line holds the waiting script.
    let execed = || {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| !c.windows(9).any(|w| w == b"import os"))
            .unwrap_or(false)
    };
    trigger_and_wait(&mut child, execed);
    // Same file, so the executable check alone would pass...
    caller.executable().check(pid).expect("same file");
    // ...but the address space of connect is gone. The new image shows in
    // /proc a moment before exec drops the old address space (its last user
    // goes at the end of exec_mmap): until then nothing about the caller has
    // changed yet, so the check may pass; it must turn to Execed, and never
    // to anything else.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match caller.still_same() {
            Err(CallerError::Execed { pid: p }) => {
                assert_eq!(p, pid);
                break;
            }
            Ok(()) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(1))
            }
            other => panic!("expected Execed, got {other:?}"),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn an_empty_environment_is_held_through_mem() {
    let mut child = Command::new("/usr/bin/sleep")
        .arg("30")
        .env_clear()
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let caller = Caller::from_pid(child.id() as i32).expect("caller");
    caller.still_same().expect("alive and unchanged");
    let _ = child.kill();
    let _ = child.wait();
    assert!(matches!(
        caller.still_same(),
        Err(CallerError::ProcessGone { .. })
    ));
}
