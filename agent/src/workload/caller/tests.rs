use std::process::{Command, Stdio};

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
