//! [`Pkcs11KeyManager`]: CA keys generated and used inside a PKCS#11 token.

mod attrs;
mod module;
mod pin;
mod pool;
mod recovery;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use cryptoki::context::Pkcs11;
use cryptoki::error::RvError;
use cryptoki::object::ObjectHandle;
use cryptoki::session::Session;
use cryptoki::slot::{Limit, Slot};

pub use pin::PinSource;

use crate::error::ck_text;
use crate::{check_digest, HsmError, KeyAlgorithm, KeyInfo, KeyManager, KeyManagerHealth};
use attrs::{find_private, inspect, key_objects, keypair_templates, sign_with};
use module::{Generation, ModuleLease};
use pool::{ck, OpError, SessionPool};
use recovery::Status;

/// Labels longer than this are almost certainly a mistake, and some HSMs truncate CKA_LABEL.
const MAX_LABEL_LEN: usize = 128;

/// How to reach the token. Serde-friendly configuration lives in the server; this is the
/// plain form it converts to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pkcs11Config {
    /// Path of the vendor's PKCS#11 library, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label (slot numbers change when tokens are added, labels do not).
    pub token_label: String,
    /// Where the user PIN comes from.
    pub pin: PinSource,
    /// Sessions to keep open; 0 means one per CPU core. Capped by the token's session limit.
    pub sessions: usize,
}

/// A private key found and checked earlier: signing reuses the handle instead of searching
/// the token every time (object handles stay valid for the application while it has
/// sessions open; a stale one is detected and looked up again). A handle is only used in the
/// module generation it was found in: after a re-initialisation the same number may name
/// another object.
#[derive(Clone)]
struct CachedKey {
    handle: ObjectHandle,
    algorithm: KeyAlgorithm,
    generation: Generation,
}

/// Keys in a PKCS#11 token. Private keys are generated in the token as sensitive and
/// non-extractable and are only ever used through C_Sign.
///
/// When the token becomes unreachable (the device, its connection, or the module's state is
/// gone), every call fails fast with [`HsmError::Unreachable`] and a background thread
/// reconnects with jittered backoff (250 ms doubling to 5 s): C_Finalize + C_Initialize of the
/// module, the token's slot found again by label, new sessions logged in with the configured
/// PIN source, and the keys in use found again by label. [`KeyManager::health`] reports the
/// outage from its first moment.
pub struct Pkcs11KeyManager {
    inner: Arc<Inner>,
}

/// The manager's state, shared with its reconnection thread (which holds it weakly, so
/// dropping the manager ends the thread).
struct Inner {
    // Field order matters: the pool (and with it every session) must be dropped before the
    // module lease, whose drop may C_Finalize the module.
    pool: SessionPool,
    cache: RwLock<HashMap<String, CachedKey>>,
    /// Serializes generate/destroy so two threads cannot both pass the "label free" check.
    admin: Mutex<()>,
    token_label: String,
    module_path: PathBuf,
    status: Mutex<Status>,
    _module: ModuleLease,
}

impl Pkcs11KeyManager {
    /// Loads the module (shared with any other manager using the same module in this
    /// process), finds the token by label, and opens a pool of logged-in sessions.
    pub fn open(cfg: &Pkcs11Config) -> Result<Self, HsmError> {
        let token_label = cfg.token_label.trim_end_matches(' ').to_owned();
        let module = ModuleLease::acquire(&cfg.module)?;
        let (slot, sessions) = {
            let _call = module.module().enter();
            let ctx = module.module().ctx();
            let slot = find_slot(ctx, &token_label)?;
            (slot, pool_size(ctx, slot, cfg.sessions, &token_label))
        };
        let pool = SessionPool::open(
            module.module().clone(),
            slot,
            token_label.clone(),
            cfg.pin.clone(),
            sessions,
        )?;
        tracing::info!(
            token = %token_label,
            module = %cfg.module.display(),
            slot = slot.id(),
            sessions,
            "PKCS#11 key manager ready"
        );
        Ok(Pkcs11KeyManager {
            inner: Arc::new(Inner {
                pool,
                cache: RwLock::new(HashMap::new()),
                admin: Mutex::new(()),
                token_label,
                module_path: cfg.module.clone(),
                status: Mutex::new(Status::Reachable),
                _module: module,
            }),
        })
    }

    /// Number of sessions in the pool (how many signatures can run at once).
    pub fn sessions(&self) -> usize {
        self.inner.pool.capacity()
    }

    /// Runs `f` unless the token is known to be unreachable (then fails fast with the
    /// outage's error); an [`HsmError::Unreachable`] from `f` starts an outage (and the
    /// reconnection) or joins the current one.
    fn guarded<T>(&self, f: impl FnOnce(&Inner) -> Result<T, HsmError>) -> Result<T, HsmError> {
        if let Some(e) = recovery::outage_error(&self.inner) {
            return Err(e);
        }
        match f(&self.inner) {
            Err(HsmError::Unreachable { reason, .. }) => Err(recovery::lost(&self.inner, reason)),
            other => other,
        }
    }
}

impl Inner {
    fn cached(&self, label: &str, generation: Generation) -> Option<CachedKey> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .filter(|k| k.generation == generation)
            .cloned()
    }

    /// Labels of the keys in use (looked up or generated through this manager).
    fn cached_labels(&self) -> Vec<String> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    fn remember(&self, info: &KeyInfo, handle: ObjectHandle, generation: Generation) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                info.label.clone(),
                CachedKey {
                    handle,
                    algorithm: info.algorithm,
                    generation,
                },
            );
    }

    fn forget(&self, label: &str) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
    }

    /// Finds the private key, runs every check on it, and caches its handle; `None` if absent.
    /// A key that fails a check is dropped from the cache so it cannot stay usable.
    fn lookup(
        &self,
        session: &Session,
        label: &str,
        generation: Generation,
    ) -> Result<Option<(CachedKey, KeyInfo)>, OpError> {
        let Some(handle) = find_private(session, label)? else {
            self.forget(label);
            return Ok(None);
        };
        match inspect(session, label, handle) {
            Ok(info) => {
                self.remember(&info, handle, generation);
                let key = CachedKey {
                    handle,
                    algorithm: info.algorithm,
                    generation,
                };
                Ok(Some((key, info)))
            }
            Err(e) => {
                self.forget(label);
                Err(e)
            }
        }
    }
}

fn validate_label(label: &str) -> Result<(), HsmError> {
    let reason = if label.is_empty() {
        "it is empty"
    } else if label.len() > MAX_LABEL_LEN {
        "it is longer than 128 bytes"
    } else if label.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(HsmError::InvalidLabel {
        label: label.escape_debug().to_string(),
        reason,
    })
}

/// The slot whose token has `label`. Never by slot number: SoftHSM (and many HSMs) assign slot
/// ids from token serials, and they change when tokens are added or re-initialized.
fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, HsmError> {
    let pkcs11_err = |op: &str, e| HsmError::Pkcs11 {
        op: op.to_owned(),
        token: label.to_owned(),
        detail: ck_text(&e),
    };
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| pkcs11_err("list slots", e))?;
    let mut matching = Vec::new();
    let mut available = Vec::new();
    for slot in slots {
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| pkcs11_err("read token information", e))?;
        if !info.token_initialized() {
            continue;
        }
        if info.label() == label {
            matching.push(slot);
        }
        available.push(info.label().to_owned());
    }
    match matching.as_slice() {
        [slot] => Ok(*slot),
        [] => Err(HsmError::TokenNotFound {
            label: label.to_owned(),
            available,
        }),
        more => Err(HsmError::TokenAmbiguous {
            label: label.to_owned(),
            count: more.len(),
        }),
    }
}

/// `requested`, or one per core for 0, capped at what the token says it allows.
fn pool_size(ctx: &Pkcs11, slot: Slot, requested: usize, token: &str) -> usize {
    let wanted = if requested == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        requested
    };
    let limit = ctx.get_token_info(slot).ok().and_then(|info| {
        [info.max_session_count(), info.max_rw_session_count()]
            .into_iter()
            .filter_map(|l| match l {
                Limit::Max(n) => usize::try_from(n).ok(),
                Limit::Unavailable | Limit::Infinite => None,
            })
            .min()
    });
    match limit {
        Some(max) if max < wanted => {
            tracing::warn!(
                token,
                wanted,
                max,
                "token allows fewer sessions than requested; using its maximum"
            );
            max.max(1)
        }
        _ => wanted,
    }
}

impl KeyManager for Pkcs11KeyManager {
    fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, HsmError> {
        validate_label(label)?;
        self.guarded(|inner| inner.generate(label, algorithm))
    }

    fn find(&self, label: &str) -> Result<Option<KeyInfo>, HsmError> {
        validate_label(label)?;
        // Always re-reads the token (never answers from the cache): find is where the
        // attribute checks are promised, and it is rare (startup, rotation).
        self.guarded(|inner| {
            inner.pool.with_logged_in_session(|session, generation| {
                Ok(inner
                    .lookup(session, label, generation)?
                    .map(|(_, info)| info))
            })
        })
    }

    fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        check_digest(digest)?;
        self.guarded(|inner| inner.sign_digest(label, digest))
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.guarded(|inner| inner.list())
    }

    fn destroy(&self, label: &str) -> Result<(), HsmError> {
        validate_label(label)?;
        self.guarded(|inner| inner.destroy(label))
    }

    fn describe(&self) -> String {
        format!(
            "pkcs11 token '{}' (module {}, slot {}, {} sessions)",
            self.inner.token_label,
            self.inner.module_path.display(),
            self.inner.pool.slot_id(),
            self.inner.pool.capacity()
        )
    }

    fn health(&self) -> KeyManagerHealth {
        recovery::health(&self.inner)
    }
}

impl Inner {
    fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, HsmError> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        let started = std::time::Instant::now();
        let (handle, info, generation) = self.pool.with_logged_in_session(|session, generation| {
            if !key_objects(session, label)?.is_empty() {
                return Err(HsmError::KeyExists {
                    label: label.to_owned(),
                }
                .into());
            }
            let (mechanism, public, private) = keypair_templates(label, algorithm)?;
            let (pub_h, priv_h) = session
                .generate_key_pair(&mechanism, &public, &private)
                .map_err(ck(format!("generate {algorithm} key pair '{label}'")))?;
            match inspect(session, label, priv_h) {
                Ok(info) => Ok((priv_h, info, generation)),
                Err(e) => {
                    // Fail closed: a key the token did not protect as asked must not linger
                    // where a later find could pick it up.
                    for h in [priv_h, pub_h] {
                        if let Err(de) = session.destroy_object(h) {
                            tracing::error!(label, error = %ck_text(&de), "cannot destroy rejected key object");
                        }
                    }
                    Err(e)
                }
            }
        })?;
        self.remember(&info, handle, generation);
        tracing::info!(
            token = %self.token_label,
            label,
            %algorithm,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "generated key pair in PKCS#11 token"
        );
        Ok(info)
    }

    fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        let not_found = || -> OpError {
            HsmError::KeyNotFound {
                label: label.to_owned(),
            }
            .into()
        };
        self.pool.with_session(|session, generation| {
            let key = match self.cached(label, generation) {
                Some(k) => k,
                None => {
                    self.lookup(session, label, generation)?
                        .ok_or_else(not_found)?
                        .0
                }
            };
            match sign_with(session, label, key.algorithm, key.handle, digest) {
                // The object went away (destroyed by another process or manager, token
                // re-initialized): search again once rather than fail a signature that a
                // re-created key could make.
                Err(e)
                    if matches!(
                        e.rv(),
                        Some(RvError::KeyHandleInvalid | RvError::ObjectHandleInvalid)
                    ) =>
                {
                    self.forget(label);
                    let (key, _) = self
                        .lookup(session, label, generation)?
                        .ok_or_else(not_found)?;
                    sign_with(session, label, key.algorithm, key.handle, digest)
                }
                other => other,
            }
        })
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.pool.with_logged_in_session(|session, _| {
            let handles = session
                .find_objects(&[cryptoki::object::Attribute::Class(
                    cryptoki::object::ObjectClass::PRIVATE_KEY,
                )])
                .map_err(ck("list private keys"))?;
            let mut keys = Vec::new();
            for handle in handles {
                let label = attrs_label(session, handle)?;
                let Some(label) = label else {
                    tracing::warn!(token = %self.token_label, "ignoring a private key without a UTF-8 CKA_LABEL");
                    continue;
                };
                match inspect(session, &label, handle) {
                    Ok(info) => keys.push(info),
                    Err(OpError::Hsm(e)) if !e.is_unreachable() => {
                        tracing::warn!(token = %self.token_label, label, error = %e, "ignoring an unusable key");
                    }
                    Err(e) => return Err(e),
                }
            }
            keys.sort_by(|a, b| a.label.cmp(&b.label));
            Ok(keys)
        })
    }

    fn destroy(&self, label: &str) -> Result<(), HsmError> {
        let _admin = self.admin.lock().unwrap_or_else(|p| p.into_inner());
        self.forget(label);
        let destroyed = self.pool.with_logged_in_session(|session, _| {
            let handles = key_objects(session, label)?;
            for h in &handles {
                session
                    .destroy_object(*h)
                    .map_err(ck(format!("destroy key '{label}'")))?;
            }
            Ok(handles.len())
        })?;
        // Again after the fact: a concurrent sign_digest may have cached the handle between
        // the first forget and the destruction.
        self.forget(label);
        if destroyed == 0 {
            return Err(HsmError::KeyNotFound {
                label: label.to_owned(),
            });
        }
        tracing::info!(token = %self.token_label, label, objects = destroyed, "destroyed key");
        Ok(())
    }
}

fn attrs_label(session: &Session, handle: ObjectHandle) -> Result<Option<String>, OpError> {
    let attrs = session
        .get_attributes(handle, &[cryptoki::object::AttributeType::Label])
        .map_err(ck("read key label"))?;
    Ok(attrs.into_iter().find_map(|a| match a {
        cryptoki::object::Attribute::Label(v) => String::from_utf8(v).ok(),
        _ => None,
    }))
}

impl std::fmt::Debug for Pkcs11KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
