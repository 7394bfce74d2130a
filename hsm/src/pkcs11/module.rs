//! Process-wide registry of loaded PKCS#11 modules, and their re-initialisation.
//!
//! C_Initialize may run only once per module per process (a second call returns
//! CKR_CRYPTOKI_ALREADY_INITIALIZED), and C_Finalize invalidates every session of every user of
//! the module. A server that opens two tokens of one module (its CA token and an upstream CA
//! token) therefore has to share one initialized context per module, and finalize only when
//! the last user lets go. The count lives in the registry, under its lock, rather than in an
//! `Arc`: with an `Arc`, a new user could find the old context dead but not yet finalized,
//! initialize a fresh one, and then lose it to the old one's late C_Finalize.
//!
//! Some outages only end with C_Finalize + C_Initialize: a p11-kit remoting client whose
//! server went away keeps answering CKR_DEVICE_ERROR, even to C_OpenSession, until the module
//! is initialised again; so do modules of network HSMs. [`Module::reinitialize`] does that
//! while no other thread is inside the module: the PKCS#11 specification leaves C_Finalize
//! during other threads' calls undefined. Every call runs under a [`CallGuard`] (a shared
//! "inside the module" count), and a re-initialisation waits for the count to reach zero,
//! holding new calls back meanwhile. Each re-initialisation starts a new *generation*: session
//! and object handles of an older generation mean nothing (or, worse, something else) in the
//! new one, so the pools and key caches compare generations before using a handle.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::error::ck_text;
use crate::HsmError;

/// How long a re-initialisation waits for calls already inside the module to return. Calls
/// still running then are abandoned: the module is re-initialised under them. They run
/// against a device already found gone, so they cannot succeed, and some never return: with
/// p11-kit remoting, a call that waits for another thread's reply when the connection dies
/// waits forever (seen with p11-kit 0.24). Waiting for them would keep the server from ever
/// signing again; the specification leaves C_Finalize during other calls undefined, so this
/// is the lesser risk, taken only for a device already lost.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// A re-initialisation's generation counter; sessions and object handles belong to one.
pub(crate) type Generation = u64;

/// Who is inside the module, and which generation it is in.
struct Gate {
    generation: Generation,
    /// Calls of this generation running (each holds a [`CallGuard`]).
    inside: usize,
    /// Calls of older generations still running: abandoned by a re-initialisation that could
    /// not wait for them any longer.
    abandoned: usize,
    /// A re-initialisation is waiting for `inside` to drain; new calls wait.
    draining: bool,
    /// False after a C_Finalize whose C_Initialize failed: every call would fail with
    /// CKR_CRYPTOKI_NOT_INITIALIZED until the next attempt succeeds.
    initialized: bool,
    /// The last user let go and the module was finalized for good: never initialise it again.
    retired: bool,
}

/// One loaded module, shared by every key manager of the process that uses it.
pub(crate) struct Module {
    path: PathBuf,
    ctx: Pkcs11,
    /// False when someone else in the process had already initialized the module: then it is
    /// theirs to finalize (and to re-initialise), not ours.
    owns_init: bool,
    gate: Mutex<Gate>,
    changed: Condvar,
}

/// Proof that the caller is inside the module at [`CallGuard::generation`]: no
/// re-initialisation can run until it is dropped. Held for the whole of a pooled operation.
pub(crate) struct CallGuard<'a> {
    module: &'a Module,
    generation: Generation,
}

impl CallGuard<'_> {
    /// The generation every handle used under this guard must belong to.
    pub(crate) fn generation(&self) -> Generation {
        self.generation
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        let mut gate = self.module.lock();
        if self.generation == gate.generation {
            gate.inside = gate.inside.saturating_sub(1);
            if gate.inside == 0 {
                self.module.changed.notify_all();
            }
        } else {
            gate.abandoned = gate.abandoned.saturating_sub(1);
            tracing::info!(module = %self.module.path.display(), generation = self.generation, "an abandoned PKCS#11 call returned after the module was re-initialised");
        }
    }
}

impl Module {
    fn lock(&self) -> MutexGuard<'_, Gate> {
        // Every update is a few plain assignments: a panic cannot leave the gate half-updated.
        self.gate.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The shared context. Use it only under a [`CallGuard`].
    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.ctx
    }

    /// Enters the module (waiting while a re-initialisation drains or runs).
    pub(crate) fn enter(&self) -> CallGuard<'_> {
        let mut gate = self.lock();
        while gate.draining {
            gate = self.changed.wait(gate).unwrap_or_else(|p| p.into_inner());
        }
        gate.inside += 1;
        CallGuard {
            module: self,
            generation: gate.generation,
        }
    }

    /// Enters the module unless a re-initialisation is draining or running (for a health
    /// probe, which must answer at once).
    pub(crate) fn try_enter(&self) -> Option<CallGuard<'_>> {
        let mut gate = self.lock();
        if gate.draining {
            return None;
        }
        gate.inside += 1;
        Some(CallGuard {
            module: self,
            generation: gate.generation,
        })
    }

    /// The current generation (without entering).
    pub(crate) fn generation(&self) -> Generation {
        self.lock().generation
    }

    /// C_Finalize + C_Initialize, unless the module was already re-initialised since
    /// generation `lost_in` (by another key manager sharing it, or an earlier attempt):
    /// then its sessions are already new and nothing is done. Returns the generation to use.
    ///
    /// Must not be called while holding a [`CallGuard`] (it would wait for itself).
    pub(crate) fn reinitialize(&self, lost_in: Generation) -> Result<Generation, HsmError> {
        let mut gate = self.lock();
        if gate.retired {
            return Err(HsmError::ModuleInit {
                path: self.path.clone(),
                detail: "the module was finalized: its last key manager was closed".to_owned(),
            });
        }
        if gate.generation != lost_in && gate.initialized {
            return Ok(gate.generation);
        }
        if !self.owns_init {
            // Not ours to finalize: the pools can still replace sessions and log in again.
            tracing::warn!(
                module = %self.path.display(),
                "PKCS#11 module was initialised by other code in this process; cannot re-initialise it, only open new sessions"
            );
            return Ok(gate.generation);
        }
        while gate.draining {
            // Another thread is re-initialising: wait for its result instead.
            gate = self.changed.wait(gate).unwrap_or_else(|p| p.into_inner());
            if gate.generation != lost_in && gate.initialized {
                return Ok(gate.generation);
            }
        }
        gate.draining = true;
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        while gate.inside > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::error!(
                    module = %self.path.display(),
                    calls = gate.inside,
                    "PKCS#11 calls did not return within {}s of the device loss; re-initialising the module under them (they are abandoned: a hung device or a module bug)",
                    DRAIN_TIMEOUT.as_secs()
                );
                gate.abandoned += gate.inside;
                gate.inside = 0;
                break;
            }
            gate = self
                .changed
                .wait_timeout(gate, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if gate.retired {
            gate.draining = false;
            self.changed.notify_all();
            return Err(HsmError::ModuleInit {
                path: self.path.clone(),
                detail: "the module was finalized: its last key manager was closed".to_owned(),
            });
        }
        // Nobody is inside and nobody can enter: finalize and initialize under the lock.
        if gate.initialized {
            if let Err(e) = self.ctx.clone().finalize() {
                // The module's state is lost either way; C_Initialize decides.
                tracing::debug!(module = %self.path.display(), error = %ck_text(&e), "C_Finalize during re-initialisation failed");
            }
        }
        gate.generation += 1;
        let result = match self.ctx.initialize(init_args()) {
            Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                gate.initialized = true;
                tracing::info!(module = %self.path.display(), generation = gate.generation, "PKCS#11 module re-initialised");
                Ok(gate.generation)
            }
            Err(e) => {
                gate.initialized = false;
                Err(HsmError::ModuleInit {
                    path: self.path.clone(),
                    detail: ck_text(&e),
                })
            }
        };
        gate.draining = false;
        self.changed.notify_all();
        result
    }
}

fn init_args() -> CInitializeArgs {
    CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)
}

struct Loaded {
    module: Arc<Module>,
    users: usize,
}

static MODULES: Mutex<Option<HashMap<PathBuf, Loaded>>> = Mutex::new(None);

fn registry() -> MutexGuard<'static, Option<HashMap<PathBuf, Loaded>>> {
    // A panic while holding this lock cannot leave a half-updated entry (each update is a
    // single insert/remove/increment), so a poisoned lock is still consistent.
    MODULES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One user's share of an initialized module. Dropping the last lease finalizes the module.
pub(crate) struct ModuleLease {
    key: PathBuf,
    module: Arc<Module>,
}

impl ModuleLease {
    /// Loads and initializes the module at `path`, or joins the process's existing context for
    /// the same file (paths are canonicalized, so symlinks to one library share it).
    pub(crate) fn acquire(path: &Path) -> Result<Self, HsmError> {
        let key = match std::fs::canonicalize(path) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(HsmError::ModuleNotFound {
                    path: path.to_owned(),
                })
            }
            Err(e) => {
                return Err(HsmError::ModuleLoad {
                    path: path.to_owned(),
                    detail: e.to_string(),
                })
            }
        };
        // Held across load + C_Initialize so two threads opening the same module cannot both
        // initialize it, and a concurrent last-drop cannot finalize under us.
        let mut guard = registry();
        let modules = guard.get_or_insert_with(HashMap::new);
        if let Some(loaded) = modules.get_mut(&key) {
            loaded.users += 1;
            tracing::debug!(module = %key.display(), users = loaded.users, "sharing initialized PKCS#11 module");
            return Ok(ModuleLease {
                key,
                module: loaded.module.clone(),
            });
        }
        let ctx = Pkcs11::new(&key).map_err(|e| HsmError::ModuleLoad {
            path: path.to_owned(),
            detail: ck_text(&e),
        })?;
        let owns_init = match ctx.initialize(init_args()) {
            Ok(()) => true,
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
                tracing::warn!(
                    module = %key.display(),
                    "PKCS#11 module was already initialized by other code in this process; sharing it and leaving C_Finalize to that code"
                );
                false
            }
            Err(e) => {
                return Err(HsmError::ModuleInit {
                    path: path.to_owned(),
                    detail: ck_text(&e),
                })
            }
        };
        tracing::info!(module = %key.display(), "PKCS#11 module loaded and initialized");
        let module = Arc::new(Module {
            path: key.clone(),
            ctx,
            owns_init,
            gate: Mutex::new(Gate {
                generation: 0,
                inside: 0,
                abandoned: 0,
                draining: false,
                initialized: true,
                retired: false,
            }),
            changed: Condvar::new(),
        });
        modules.insert(
            key.clone(),
            Loaded {
                module: module.clone(),
                users: 1,
            },
        );
        Ok(ModuleLease { key, module })
    }

    /// The shared module.
    pub(crate) fn module(&self) -> &Arc<Module> {
        &self.module
    }
}

impl Drop for ModuleLease {
    fn drop(&mut self) {
        let mut guard = registry();
        let Some(modules) = guard.as_mut() else {
            return;
        };
        let last = match modules.get_mut(&self.key) {
            Some(loaded) => {
                loaded.users = loaded.users.saturating_sub(1);
                loaded.users == 0
            }
            None => false,
        };
        if !last {
            return;
        }
        if let Some(loaded) = modules.remove(&self.key) {
            let module = loaded.module;
            // Still under the registry lock: a new acquire must see either the live context
            // or a fully finalized module, never one in between. The gate is taken too, so a
            // late re-initialisation (a recovery thread of the last user) cannot interleave.
            let mut gate = module.lock();
            gate.retired = true;
            if module.owns_init && gate.initialized {
                match module.ctx.clone().finalize() {
                    Ok(()) => {
                        tracing::debug!(module = %self.key.display(), "PKCS#11 module finalized")
                    }
                    Err(e) => {
                        tracing::warn!(module = %self.key.display(), error = %ck_text(&e), "C_Finalize failed")
                    }
                }
            }
        }
    }
}
