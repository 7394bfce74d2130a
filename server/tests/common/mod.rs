//! The shared harness lives in ironroot-testkit (the agent's tests use it too).
#![allow(unused_imports)]

pub use ironroot_testkit::server::*;
pub use ironroot_testkit::svid;
