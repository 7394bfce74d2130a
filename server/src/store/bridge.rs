//! Waiting on the store from synchronous code.
//!
//! The CA and the node attestors are synchronous (they run on tokio's
//! blocking pool, beside HSM and TPM calls that block); the store is async.
//! This is the one place that bridges the two.

use std::future::Future;

use super::StoreError;

/// Runs `f` to completion from synchronous code: on a blocking-pool thread
/// through the runtime's handle, on a multi-thread runtime's worker by
/// stepping off it first, and outside any runtime on a small one of its own
/// (tests and benchmarks that drive the CA directly).
pub(crate) fn wait<T>(f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => match handle.runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => {
                // On a blocking-pool thread this only runs the closure.
                tokio::task::block_in_place(|| handle.block_on(f))
            }
            // A current-thread runtime: callable only from its blocking pool,
            // where `block_on` through the handle is allowed.
            _ => handle.block_on(f),
        },
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::backend("runtime", e))?
            .block_on(f),
    }
}
