use std::process::{Command, Stdio};
use std::sync::Arc;

use super::*;

struct Fixed(Vec<&'static str>);

impl WorkloadAttestor for Fixed {
    fn name(&self) -> &'static str {
        "fixed"
    }
    fn attest(&self, _caller: &Caller) -> Result<Vec<Selector>, WorkloadAttestError> {
        Ok(self
            .0
            .iter()
            .map(|s| Selector::parse(s).expect("selector"))
            .collect())
    }
}

#[test]
fn attest_caller_merges_sorts_and_checks_the_caller() {
    let mut child = Command::new("sleep")
        .arg("30")
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let caller = Caller::from_pid(child.id() as i32).expect("caller");
    let attestors: Vec<Arc<dyn WorkloadAttestor>> = vec![
        Arc::new(Fixed(vec!["b:2", "a:1"])),
        Arc::new(Fixed(vec!["a:1", "c:3"])),
    ];
    let got = attest_caller(&attestors, &caller).expect("attest");
    let want: Vec<Selector> = ["a:1", "b:2", "c:3"]
        .iter()
        .map(|s| Selector::parse(s).expect("selector"))
        .collect();
    assert_eq!(got, want);

    // Once the caller is gone, the selectors gathered are not returned.
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert!(matches!(
        attest_caller(&attestors, &caller),
        Err(WorkloadAttestError::ProcessGone { .. })
    ));
}

#[test]
fn invalid_values_are_left_out() {
    let mut out = Vec::new();
    push_selector(&mut out, 1, "unix", "path:/tmp/a\nb".into());
    push_selector(&mut out, 1, "unix", "x".repeat(5000));
    push_selector(&mut out, 1, "unix", "uid:0".into());
    assert_eq!(out, vec![Selector::parse("unix:uid:0").expect("selector")]);
}

#[test]
fn caller_errors_that_mean_gone_map_to_process_gone() {
    let e: WorkloadAttestError = CallerError::Replaced {
        pid: 7,
        recorded: 1,
        current: 2,
    }
    .into();
    assert!(matches!(e, WorkloadAttestError::ProcessGone { pid: 7 }));
    let e: WorkloadAttestError = CallerError::NoPeerPid.into();
    assert!(matches!(
        e,
        WorkloadAttestError::Caller(CallerError::NoPeerPid)
    ));
}
