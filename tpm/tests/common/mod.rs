//! Finding the shared fixtures (never copied into the repo): the one implementation in
//! testkit.

#[allow(unused_imports)] // each test binary uses a different subset
pub(crate) use ironroot_testkit::fixtures::{fixtures_dir, fixtures_or_skip, read};
