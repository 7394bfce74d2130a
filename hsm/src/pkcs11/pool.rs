//! A fixed-size pool of logged-in PKCS#11 sessions.
//!
//! A PKCS#11 session runs one operation at a time, and cryptoki's `Session` is `Send` but not
//! `Sync`. One session per worker thread is what lets N threads sign in parallel on an N-core
//! machine (or keep N HSM engines busy); a single shared session would serialize every
//! signature behind one lock.
//!
//! Every operation runs inside the module ([`Module::enter`]), so the module cannot be
//! re-initialised under it. The idle sessions belong to one module generation; when the module
//! was re-initialised since, they are dropped without C_CloseSession (their handles may now
//! name other sessions) and new ones are opened on the token's slot, found again by label.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::SystemTime;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use crate::error::{ck_text, Lost};
use crate::pkcs11::module::{CallGuard, Generation, Module};
use crate::pkcs11::pin::PinSource;
use crate::HsmError;

struct PoolState {
    idle: Vec<Session>,
    /// Sessions that exist, idle or lent out. Less than `capacity` after a session was lost
    /// and its replacement could not be opened yet.
    open: usize,
    /// The module generation `idle` and `slot` belong to.
    generation: Generation,
    /// The token's slot (found by label again after each re-initialisation: slot ids may
    /// change, e.g. when a p11-kit client reconnects).
    slot: Slot,
}

pub(crate) struct SessionPool {
    state: Mutex<PoolState>,
    returned: Condvar,
    capacity: usize,
    module: Arc<Module>,
    token: String,
    pin: PinSource,
    /// The newest generation in which an operation found the device gone: the one a
    /// reconnection has to re-initialise away from.
    lost_in: AtomicU64,
}

/// A pooled operation: runs on a session of the given module generation (object handles it
/// uses must belong to the same one).
pub(crate) trait PooledOp<T>: Fn(&Session, Generation) -> Result<T, OpError> {}
impl<T, F: Fn(&Session, Generation) -> Result<T, OpError>> PooledOp<T> for F {}

impl SessionPool {
    /// Opens `capacity` read-write sessions on `slot` and logs the user in. All are opened up
    /// front so a wrong PIN or an exhausted session limit shows at startup, not at the first
    /// signature.
    pub(crate) fn open(
        module: Arc<Module>,
        slot: Slot,
        token: String,
        pin: PinSource,
        capacity: usize,
    ) -> Result<Self, HsmError> {
        let capacity = capacity.max(1);
        let generation = module.generation();
        let pool = SessionPool {
            state: Mutex::new(PoolState {
                idle: Vec::with_capacity(capacity),
                open: 0,
                generation,
                slot,
            }),
            returned: Condvar::new(),
            capacity,
            module,
            token,
            pin,
            lost_in: AtomicU64::new(generation),
        };
        pool.fill(slot)?;
        Ok(pool)
    }

    fn fill(&self, slot: Slot) -> Result<(), HsmError> {
        let pool = self;
        let call = pool.module.enter();
        // Login state is per token and application: the first session logs in and the others
        // start logged in (open_session checks rather than assumes it). The first login is
        // made even if another manager in this process already logged in to the token, so a
        // missing PIN file or variable is reported here and not only after a restart.
        let first = pool
            .module
            .ctx()
            .open_rw_session(slot)
            .map_err(|e| pool.err("open session", &e, &call))?;
        pool.login(&first, call.generation())?;
        let mut sessions = Vec::with_capacity(self.capacity);
        sessions.push(first);
        while sessions.len() < self.capacity {
            sessions.push(pool.open_session(slot, &call)?);
        }
        {
            let mut st = pool.lock();
            st.open = sessions.len();
            st.idle = sessions;
            st.generation = call.generation();
        }
        Ok(())
    }

    /// Number of sessions the pool keeps.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The token's slot id as last found.
    pub(crate) fn slot_id(&self) -> u64 {
        self.lock().slot.id()
    }

    /// The module the sessions are opened on.
    pub(crate) fn module(&self) -> &Arc<Module> {
        &self.module
    }

    /// The newest generation in which the device was found gone.
    pub(crate) fn lost_in(&self) -> Generation {
        self.lost_in.load(Ordering::SeqCst)
    }

    /// Runs `op` on a session of its own, waiting for one if all are busy. The hot path
    /// (signing): no extra PKCS#11 calls unless `op` fails.
    ///
    /// If `op` fails and the session turns out to be unusable (closed by the module, or
    /// logged out, which makes private keys invisible and shows up as CKR_KEY_HANDLE_INVALID
    /// or "key not found"), the session is repaired or replaced and `op` runs once more.
    /// Every operation we run is safe to repeat: signing, lookups, and generation (which
    /// checks the label first). A device that is gone is not retried here: the error is
    /// [`HsmError::Unreachable`] and the key manager reconnects.
    pub(crate) fn with_session<T>(&self, op: impl PooledOp<T>) -> Result<T, HsmError> {
        self.run(op, false)
    }

    /// Like [`SessionPool::with_session`], but first makes sure the session is logged in.
    /// For operations whose "nothing found" answer would be wrong rather than an error when
    /// the token has logged out (find, list, generate, destroy); they are rare, so the extra
    /// C_GetSessionInfo costs nothing that matters.
    pub(crate) fn with_logged_in_session<T>(&self, op: impl PooledOp<T>) -> Result<T, HsmError> {
        self.run(op, true)
    }

    fn run<T>(&self, op: impl PooledOp<T>, verify_first: bool) -> Result<T, HsmError> {
        let call = self.module.enter();
        let generation = call.generation();
        // Declared after `call`, so dropped (returned to the pool) before it.
        let mut lease = self.checkout(&call)?;
        if verify_first {
            self.repair(&mut lease, &call)?;
        }
        let result = match op(lease.session()?, generation) {
            // A new session would fail the same way: leave it to the reconnection.
            Err(e) if e.lost() == Some(Lost::Device) => Err(e),
            Err(e) => {
                if self.repair(&mut lease, &call)? {
                    tracing::warn!(token = %self.token, error = %self.to_hsm(e, &call), "retrying on a repaired PKCS#11 session");
                    op(lease.session()?, generation)
                } else {
                    Err(e)
                }
            }
            ok => ok,
        };
        if matches!(&result, Err(e) if e.lost().is_some()) {
            lease.discard();
        }
        result.map_err(|e| self.to_hsm(e, &call))
    }

    /// One cheap call (C_GetSessionInfo) on an idle session, to tell a health check whether
    /// the token still answers. `None` when nothing was checked: every session is busy (the
    /// operations on them report trouble themselves), the module is being re-initialised, or
    /// it was re-initialised since the idle sessions were opened (the next operation opens new
    /// ones).
    pub(crate) fn probe(&self) -> Option<Result<(), HsmError>> {
        let call = self.module.try_enter()?;
        let session = {
            let mut st = self.lock();
            if st.generation != call.generation() {
                return None;
            }
            st.idle.pop()?
        };
        let mut lease = Lease {
            pool: self,
            session: Some(session),
            generation: call.generation(),
        };
        let e = match lease.session().ok()?.get_session_info() {
            Ok(_) => return Some(Ok(())),
            Err(e) => e,
        };
        lease.discard();
        let lost = match &e {
            CkError::Pkcs11(rv, _) => Lost::of(*rv),
            _ => None,
        };
        match lost {
            Some(Lost::Device) => Some(Err(self.err("read session state", &e, &call))),
            // A session or login loss is repaired by the next operation.
            _ => Some(Ok(())),
        }
    }

    /// Makes the lent session usable again; true if anything had to be repaired.
    ///
    /// Logged out (by other code in the process, or a token that dropped its login): log in
    /// again, which restores every session of the process at once. Gone (closed): close it and
    /// take another one (a new one logs in as needed). Device gone: [`HsmError::Unreachable`].
    fn repair<'a>(&'a self, lease: &mut Lease<'a>, call: &CallGuard<'_>) -> Result<bool, HsmError> {
        match lease.session()?.get_session_info() {
            Ok(info)
                if matches!(
                    info.session_state(),
                    SessionState::RwUser | SessionState::RoUser
                ) =>
            {
                Ok(false)
            }
            Ok(_) => {
                tracing::warn!(token = %self.token, "PKCS#11 token is no longer logged in; logging in again");
                self.login(lease.session()?, call.generation())?;
                Ok(true)
            }
            Err(e) if matches!(&e, CkError::Pkcs11(rv, _) if Lost::of(*rv) == Some(Lost::Device)) =>
            {
                lease.discard();
                Err(self.err("read session state", &e, call))
            }
            Err(e) => {
                tracing::warn!(token = %self.token, error = %ck_text(&e), "PKCS#11 session is gone; replacing it");
                lease.discard();
                *lease = self.checkout_checked(call)?;
                Ok(true)
            }
        }
    }

    /// A session known to work, for replacing a lost one: sessions rarely go alone (closed
    /// all at once, or with the login), so idle ones are checked (C_GetSessionInfo) and the
    /// lost ones discarded until a good one or a new one comes up; a session found logged
    /// out is logged in.
    fn checkout_checked<'a>(&'a self, call: &CallGuard<'_>) -> Result<Lease<'a>, HsmError> {
        for _ in 0..self.capacity {
            let mut lease = self.checkout(call)?;
            match lease.session()?.get_session_info() {
                Ok(info)
                    if matches!(
                        info.session_state(),
                        SessionState::RwUser | SessionState::RoUser
                    ) =>
                {
                    return Ok(lease)
                }
                Ok(_) => {
                    self.login(lease.session()?, call.generation())?;
                    return Ok(lease);
                }
                Err(e) if matches!(&e, CkError::Pkcs11(rv, _) if Lost::of(*rv) == Some(Lost::Session)) =>
                {
                    lease.discard();
                }
                Err(e) => {
                    lease.discard();
                    return Err(self.err("read session state", &e, call));
                }
            }
        }
        // Every idle session was lost (and discarded): this one is new.
        self.checkout(call)
    }

    fn to_hsm(&self, e: OpError, call: &CallGuard<'_>) -> HsmError {
        match e {
            OpError::Hsm(e) => e,
            OpError::Ck { op, err } => self.err(&op, &err, call),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Sessions are pushed and popped whole; a panic elsewhere cannot corrupt the state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self, call: &CallGuard<'_>) -> Result<Lease<'_>, HsmError> {
        let mut st = self.lock();
        if st.generation != call.generation() {
            self.renew(&mut st, call)?;
        }
        loop {
            if let Some(s) = st.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    session: Some(s),
                    generation: call.generation(),
                });
            }
            if st.open < self.capacity {
                st.open += 1;
                let slot = st.slot;
                drop(st);
                return match self.open_session(slot, call) {
                    Ok(s) => Ok(Lease {
                        pool: self,
                        session: Some(s),
                        generation: call.generation(),
                    }),
                    Err(e) => {
                        self.forget_one();
                        Err(e)
                    }
                };
            }
            st = self.returned.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The module was re-initialised: the idle sessions are void. Their handles may name
    /// sessions of the new generation (other managers' too), so they are forgotten, not
    /// closed; no session can be lent out here (a re-initialisation waits for every call to
    /// leave the module). The slot is looked up again by label.
    fn renew(&self, st: &mut PoolState, call: &CallGuard<'_>) -> Result<(), HsmError> {
        for session in st.idle.drain(..) {
            // Leaks the small Session struct (and a reference to the loaded library): far
            // better than a C_CloseSession that closes somebody else's new session.
            std::mem::forget(session);
        }
        st.open = 0;
        st.slot = match super::find_slot(self.module.ctx(), &self.token) {
            Ok(slot) => slot,
            Err(e @ (HsmError::TokenNotFound { .. } | HsmError::Pkcs11 { .. })) => {
                // A remote token that is not back yet shows up as "no such token".
                return Err(self.unreachable(e.to_string(), call.generation()));
            }
            Err(e) => return Err(e),
        };
        st.generation = call.generation();
        tracing::info!(token = %self.token, slot = st.slot.id(), generation = st.generation, "PKCS#11 sessions renewed after module re-initialisation");
        Ok(())
    }

    /// One session fewer exists; wake a waiter so it can open a replacement.
    fn forget_one(&self) {
        let mut st = self.lock();
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.returned.notify_one();
    }

    fn open_session(&self, slot: Slot, call: &CallGuard<'_>) -> Result<Session, HsmError> {
        let session = self
            .module
            .ctx()
            .open_rw_session(slot)
            .map_err(|e| self.err("open session", &e, call))?;
        let state = session
            .get_session_info()
            .map_err(|e| self.err("read session state", &e, call))?
            .session_state();
        if !matches!(state, SessionState::RwUser | SessionState::RoUser) {
            self.login(&session, call.generation())?;
        }
        Ok(session)
    }

    fn login(&self, session: &Session, generation: Generation) -> Result<(), HsmError> {
        let pin = self.pin.read()?;
        let token = self.token.clone();
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) => {
                tracing::info!(token = %self.token, pin_from = %self.pin.describe(), "logged in to PKCS#11 token");
                Ok(())
            }
            // Another session of this process (e.g. a second manager on the same token) is
            // already logged in; the login state is shared, so this session can work. The
            // token does not check the PIN in this case, so a wrong PIN goes unnoticed until
            // the first manager closes.
            Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {
                tracing::debug!(token = %self.token, "token already logged in by this process");
                Ok(())
            }
            Err(CkError::Pkcs11(RvError::PinIncorrect | RvError::PinLenRange, _)) => {
                Err(HsmError::PinIncorrect { token })
            }
            Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(HsmError::PinLocked { token }),
            Err(CkError::Pkcs11(rv, _)) if Lost::of(rv) == Some(Lost::Device) => Err(self
                .unreachable(
                    format!("C_Login returned {}", crate::error::ckr_name(&rv)),
                    generation,
                )),
            Err(e) => Err(HsmError::Login {
                token,
                detail: ck_text(&e),
            }),
        }
        // `pin` is dropped (and zeroized by secrecy) here.
    }

    /// A failed PKCS#11 call: [`HsmError::Unreachable`] when it says the device is gone
    /// (recording the generation it was seen in), else [`HsmError::Pkcs11`].
    fn err(&self, op: &str, e: &CkError, call: &CallGuard<'_>) -> HsmError {
        match e {
            CkError::Pkcs11(rv, _) if Lost::of(*rv).is_some() => {
                self.unreachable(format!("{op}: {}", ck_text(e)), call.generation())
            }
            _ => HsmError::Pkcs11 {
                op: op.to_owned(),
                token: self.token.clone(),
                detail: ck_text(e),
            },
        }
    }

    fn unreachable(&self, reason: String, generation: Generation) -> HsmError {
        self.lost_in.fetch_max(generation, Ordering::SeqCst);
        HsmError::Unreachable {
            token: self.token.clone(),
            // The key manager replaces this with the start of the outage it belongs to.
            since: SystemTime::now(),
            reason,
        }
    }
}

impl Drop for SessionPool {
    fn drop(&mut self) {
        let generation = self.module.generation();
        let mut st = self.lock();
        if st.generation != generation {
            // Re-initialised since these were opened: closing their handles could close
            // sessions another manager of the module has opened since.
            for session in st.idle.drain(..) {
                std::mem::forget(session);
            }
        }
        // Sessions of the current generation close as they drop.
    }
}

/// A session lent out by the pool. It goes back to the pool when dropped (also if the
/// operation panicked), unless it was discarded as lost, or the module was re-initialised
/// under it (an abandoned call): then its handle is void and it is forgotten.
struct Lease<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
    generation: Generation,
}

impl Lease<'_> {
    fn session(&self) -> Result<&Session, HsmError> {
        // Empty only after `discard`, and callers replace a discarded lease before using it
        // again; the error keeps a slip from becoming a panic.
        self.session.as_ref().ok_or_else(|| HsmError::Pkcs11 {
            op: "use pooled session".to_owned(),
            token: self.pool.token.clone(),
            detail: "the session was already discarded".to_owned(),
        })
    }

    /// Closes the session (it may already be gone) instead of returning it to the pool.
    fn discard(&mut self) {
        if let Some(session) = self.session.take() {
            if self.pool.lock().generation != self.generation {
                std::mem::forget(session);
                return;
            }
            if let Err(e) = session.close() {
                tracing::debug!(error = %ck_text(&e), "closing a lost session failed");
            }
            self.pool.forget_one();
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let mut st = self.pool.lock();
            if st.generation != self.generation {
                // Abandoned by a re-initialisation: the pool has been renewed without it.
                std::mem::forget(session);
                return;
            }
            st.idle.push(session);
            drop(st);
            self.pool.returned.notify_one();
        }
    }
}

/// An error inside a pooled operation. PKCS#11 errors stay typed until they leave the pool, so
/// the pool (and the operations themselves) can react to specific CKR_ codes.
#[derive(Debug)]
pub(crate) enum OpError {
    /// Already a finished error.
    Hsm(HsmError),
    /// A PKCS#11 call failed while doing `op`.
    Ck { op: String, err: CkError },
}

impl From<HsmError> for OpError {
    fn from(e: HsmError) -> Self {
        OpError::Hsm(e)
    }
}

impl OpError {
    /// The CKR_ code, if this is a PKCS#11 error.
    pub(crate) fn rv(&self) -> Option<RvError> {
        match self {
            OpError::Ck {
                err: CkError::Pkcs11(rv, _),
                ..
            } => Some(*rv),
            _ => None,
        }
    }

    /// What the error says is gone (the device, the session, the login), if anything, as
    /// opposed to "this operation failed". An [`HsmError::Unreachable`] from a nested step
    /// counts as the device.
    pub(crate) fn lost(&self) -> Option<Lost> {
        match self {
            OpError::Hsm(e) if e.is_unreachable() => Some(Lost::Device),
            _ => self.rv().and_then(Lost::of),
        }
    }
}

/// `session.sign(..).map_err(ck("sign with key 'x'"))?`
pub(crate) fn ck(op: impl Into<String>) -> impl FnOnce(CkError) -> OpError {
    move |err| OpError::Ck { op: op.into(), err }
}
