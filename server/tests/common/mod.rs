//! The shared harness lives in ironroot-testkit (the agent's tests use it too).
#![allow(unused_imports)]

pub(crate) use ironroot_testkit::server::*;
pub(crate) use ironroot_testkit::svid;
