//! The agent's side of the SPIFFE Workload API: who is calling
//! ([`caller`]) and which selectors describe it ([`attestor`]).

pub mod attestor;
pub mod caller;
pub mod h2_authority;
