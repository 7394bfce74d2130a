//! The agent's side of the SPIFFE Workload API: who is calling
//! ([`caller`]) and which selectors describe it ([`attestor`]); what each
//! caller may spend (`limits`, `jwt_cache`); the streams served from
//! shared encoded responses (`encoded_streams`, `shared_response`).

pub mod attestor;
pub mod caller;
pub(crate) mod encoded_streams;
pub mod h2_authority;
pub(crate) mod jwt_cache;
pub(crate) mod limits;
pub(crate) mod refuse;
pub(crate) mod shared_response;
