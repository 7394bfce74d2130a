//! One connection to the TPM for the whole agent process, used by attestation and by the
//! mTLS signer of the TPM-resident agent key.
//!
//! Why one: a TPM over TCP (swtpm, the simulator) serves one client connection at a time,
//! so a second connection from the same process would wait for the first to close; and
//! tss-esapi's context must be used by one thread at a time. So every user goes through
//! [`SharedTpm::with`], which holds a mutex only for the synchronous TPM commands it runs,
//! never across an `.await` (a TLS handshake on the same runtime thread may need to sign
//! while an attestation waits for the server).
//!
//! The connection is opened on first use and closed after it, unless a [`TpmLease`] is
//! alive: an attestation takes one so its EK, AK and saved contexts stay on one connection
//! from the first message to the answer. Outside attestations the agent holds no
//! connection, so other TPM clients (`ironroot-agent tpm info`, provisioning tools) are
//! never locked out for longer than one signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use ironroot_tpm::device::{DeviceError, Tpm};

struct State {
    tpm: Option<Tpm>,
    leases: usize,
}

struct Inner {
    tcti: String,
    state: Mutex<State>,
}

/// The process's TPM behind one TCTI. Clones share the connection.
#[derive(Clone)]
pub struct SharedTpm(Arc<Inner>);

impl std::fmt::Debug for SharedTpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTpm")
            .field("tcti", &self.0.tcti)
            .finish_non_exhaustive()
    }
}

/// Every TCTI in use in this process, so two callers never open two connections to it.
fn registry() -> &'static Mutex<HashMap<String, Weak<Inner>>> {
    static OPEN: OnceLock<Mutex<HashMap<String, Weak<Inner>>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A poisoned lock means a TPM call panicked: the connection may be mid-command, so it is
/// dropped and the next user opens a fresh one.
fn lock_state(inner: &Inner) -> MutexGuard<'_, State> {
    match inner.state.lock() {
        Ok(g) => g,
        Err(poisoned) => {
            let mut g = poisoned.into_inner();
            g.tpm = None;
            inner.state.clear_poison();
            g
        }
    }
}

impl SharedTpm {
    /// The process's handle on the TPM behind `tcti` (nothing is opened yet).
    pub fn new(tcti: &str) -> SharedTpm {
        let mut open = registry().lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, w| w.strong_count() > 0);
        if let Some(inner) = open.get(tcti).and_then(Weak::upgrade) {
            return SharedTpm(inner);
        }
        let inner = Arc::new(Inner {
            tcti: tcti.to_string(),
            state: Mutex::new(State {
                tpm: None,
                leases: 0,
            }),
        });
        open.insert(tcti.to_string(), Arc::downgrade(&inner));
        SharedTpm(inner)
    }

    /// The TCTI.
    pub fn tcti(&self) -> &str {
        &self.0.tcti
    }

    /// Runs `f` on the TPM (opened if needed; closed after unless leased). Blocks while
    /// another thread uses it. `f` must not call back into this `SharedTpm`.
    pub fn with<T, E: From<DeviceError>>(
        &self,
        f: impl FnOnce(&mut Tpm) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut state = lock_state(&self.0);
        let mut tpm = match state.tpm.take() {
            Some(t) => t,
            None => Tpm::open(&self.0.tcti)?,
        };
        let out = f(&mut tpm);
        if state.leases > 0 {
            state.tpm = Some(tpm);
        }
        out
    }

    /// Keeps the connection open until the lease is dropped.
    pub fn lease(&self) -> TpmLease {
        lock_state(&self.0).leases += 1;
        TpmLease(self.clone())
    }
}

/// While alive, [`SharedTpm::with`] keeps the connection open between calls.
#[derive(Debug)]
pub struct TpmLease(SharedTpm);

impl Drop for TpmLease {
    fn drop(&mut self) {
        let mut state = lock_state(&(self.0).0);
        state.leases = state.leases.saturating_sub(1);
        if state.leases == 0 {
            state.tpm = None;
        }
    }
}

#[cfg(test)]
mod tests;
