//! Process-wide registry of loaded PKCS#11 modules.
//!
//! C_Initialize may run only once per module per process (a second call returns
//! CKR_CRYPTOKI_ALREADY_INITIALIZED), and C_Finalize invalidates every session of every user of
//! the module. A server that opens two tokens of one module (its CA token and an upstream CA
//! token) therefore has to share one initialized context per module, and finalize only when
//! the last user lets go. The count lives in the registry, under its lock, rather than in an
//! `Arc`: with an `Arc`, a new user could find the old context dead but not yet finalized,
//! initialize a fresh one, and then lose it to the old one's late C_Finalize.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};

use crate::error::ck_text;
use crate::HsmError;

struct Loaded {
    ctx: Pkcs11,
    users: usize,
    /// False when someone else in the process had already initialized the module: then it is
    /// theirs to finalize, not ours.
    finalize: bool,
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
    ctx: Pkcs11,
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
                ctx: loaded.ctx.clone(),
            });
        }
        let ctx = Pkcs11::new(&key).map_err(|e| HsmError::ModuleLoad {
            path: path.to_owned(),
            detail: ck_text(&e),
        })?;
        let finalize = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
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
        modules.insert(
            key.clone(),
            Loaded {
                ctx: ctx.clone(),
                users: 1,
                finalize,
            },
        );
        Ok(ModuleLease { key, ctx })
    }

    /// The shared context.
    pub(crate) fn ctx(&self) -> &Pkcs11 {
        &self.ctx
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
            if loaded.finalize {
                // Still under the lock: a new acquire must see either the live context or a
                // fully finalized module, never one in between.
                match loaded.ctx.finalize() {
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
