//! A fixed-size pool of logged-in PKCS#11 sessions.
//!
//! A PKCS#11 session runs one operation at a time, and cryptoki's `Session` is `Send` but not
//! `Sync`. One session per worker thread is what lets N threads sign in parallel on an N-core
//! machine (or keep N HSM engines busy); a single shared session would serialize every
//! signature behind one lock.

use std::sync::{Condvar, Mutex, MutexGuard};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;

use crate::error::ck_text;
use crate::pkcs11::pin::PinSource;
use crate::HsmError;

struct PoolState {
    idle: Vec<Session>,
    /// Sessions that exist, idle or lent out. Less than `capacity` after a session was lost
    /// and its replacement could not be opened yet.
    open: usize,
}

pub(crate) struct SessionPool {
    state: Mutex<PoolState>,
    returned: Condvar,
    capacity: usize,
    ctx: Pkcs11,
    slot: Slot,
    token: String,
    pin: PinSource,
}

impl SessionPool {
    /// Opens `capacity` read-write sessions and logs the user in. All are opened up front so a
    /// wrong PIN or an exhausted session limit shows at startup, not at the first signature.
    pub(crate) fn open(
        ctx: Pkcs11,
        slot: Slot,
        token: String,
        pin: PinSource,
        capacity: usize,
    ) -> Result<Self, HsmError> {
        let capacity = capacity.max(1);
        let pool = SessionPool {
            state: Mutex::new(PoolState {
                idle: Vec::with_capacity(capacity),
                open: 0,
            }),
            returned: Condvar::new(),
            capacity,
            ctx,
            slot,
            token,
            pin,
        };
        // Login state is per token and application: the first session logs in and the others
        // start logged in (open_session checks rather than assumes it). The first login is
        // made even if another manager in this process already logged in to the token, so a
        // missing PIN file or variable is reported here and not only after a restart.
        let first = pool
            .ctx
            .open_rw_session(pool.slot)
            .map_err(|e| pool.err("open session", &e))?;
        pool.login(&first)?;
        let mut sessions = Vec::with_capacity(capacity);
        sessions.push(first);
        while sessions.len() < capacity {
            sessions.push(pool.open_session()?);
        }
        {
            let mut st = pool.lock();
            st.open = sessions.len();
            st.idle = sessions;
        }
        Ok(pool)
    }

    /// Number of sessions the pool keeps.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Runs `op` on a session of its own, waiting for one if all are busy. The hot path
    /// (signing): no extra PKCS#11 calls unless `op` fails.
    ///
    /// If `op` fails and the session turns out to be unusable (closed by the module, token
    /// removed, or logged out, which makes private keys invisible and shows up as
    /// CKR_KEY_HANDLE_INVALID or "key not found"), the session is repaired or replaced and
    /// `op` runs once more. Every operation we run is safe to repeat: signing, lookups, and
    /// generation (which checks the label first).
    pub(crate) fn with_session<T>(
        &self,
        op: impl Fn(&Session) -> Result<T, OpError>,
    ) -> Result<T, HsmError> {
        self.run(op, false)
    }

    /// Like [`SessionPool::with_session`], but first makes sure the session is logged in.
    /// For operations whose "nothing found" answer would be wrong rather than an error when
    /// the token has logged out (find, list, generate, destroy); they are rare, so the extra
    /// C_GetSessionInfo costs nothing that matters.
    pub(crate) fn with_logged_in_session<T>(
        &self,
        op: impl Fn(&Session) -> Result<T, OpError>,
    ) -> Result<T, HsmError> {
        self.run(op, true)
    }

    fn run<T>(
        &self,
        op: impl Fn(&Session) -> Result<T, OpError>,
        verify_first: bool,
    ) -> Result<T, HsmError> {
        let mut lease = self.checkout()?;
        if verify_first {
            self.repair(&mut lease)?;
        }
        let result = match op(lease.session()?) {
            Err(e) => {
                if self.repair(&mut lease)? {
                    tracing::warn!(token = %self.token, error = %self.to_hsm(e), "retrying on a repaired PKCS#11 session");
                    op(lease.session()?)
                } else {
                    Err(e)
                }
            }
            ok => ok,
        };
        if matches!(&result, Err(e) if e.session_lost()) {
            lease.discard();
        }
        result.map_err(|e| self.to_hsm(e))
    }

    /// Makes the lent session usable again; true if anything had to be repaired.
    ///
    /// Logged out (by other code in the process, or a token that dropped its login): log in
    /// again, which restores every session of the process at once. Gone (closed, device
    /// removed): close it and take another one (a new one logs in as needed).
    fn repair<'a>(&'a self, lease: &mut Lease<'a>) -> Result<bool, HsmError> {
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
                self.login(lease.session()?)?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(token = %self.token, error = %ck_text(&e), "PKCS#11 session is gone; replacing it");
                lease.discard();
                *lease = self.checkout()?;
                Ok(true)
            }
        }
    }

    fn to_hsm(&self, e: OpError) -> HsmError {
        match e {
            OpError::Hsm(e) => e,
            OpError::Ck { op, err } => self.err(&op, &err),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        // Sessions are pushed and popped whole; a panic elsewhere cannot corrupt the state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn checkout(&self) -> Result<Lease<'_>, HsmError> {
        let mut st = self.lock();
        loop {
            if let Some(s) = st.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    session: Some(s),
                });
            }
            if st.open < self.capacity {
                st.open += 1;
                drop(st);
                return match self.open_session() {
                    Ok(s) => Ok(Lease {
                        pool: self,
                        session: Some(s),
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

    /// One session fewer exists; wake a waiter so it can open a replacement.
    fn forget_one(&self) {
        let mut st = self.lock();
        st.open = st.open.saturating_sub(1);
        drop(st);
        self.returned.notify_one();
    }

    fn open_session(&self) -> Result<Session, HsmError> {
        let session = self
            .ctx
            .open_rw_session(self.slot)
            .map_err(|e| self.err("open session", &e))?;
        let state = session
            .get_session_info()
            .map_err(|e| self.err("read session state", &e))?
            .session_state();
        if !matches!(state, SessionState::RwUser | SessionState::RoUser) {
            self.login(&session)?;
        }
        Ok(session)
    }

    fn login(&self, session: &Session) -> Result<(), HsmError> {
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
            Err(e) => Err(HsmError::Login {
                token,
                detail: ck_text(&e),
            }),
        }
        // `pin` is dropped (and zeroized by secrecy) here.
    }

    fn err(&self, op: &str, e: &CkError) -> HsmError {
        HsmError::Pkcs11 {
            op: op.to_owned(),
            token: self.token.clone(),
            detail: ck_text(e),
        }
    }
}

/// A session lent out by the pool. It goes back to the pool when dropped (also if the
/// operation panicked), unless it was discarded as lost.
struct Lease<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
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
            self.pool.lock().idle.push(session);
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

    /// True for errors that mean "this session is unusable", as opposed to "this operation
    /// failed".
    fn session_lost(&self) -> bool {
        matches!(
            self.rv(),
            Some(
                RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::UserNotLoggedIn
                    | RvError::DeviceRemoved
                    | RvError::TokenNotPresent
            )
        )
    }
}

/// `session.sign(..).map_err(ck("sign with key 'x'"))?`
pub(crate) fn ck(op: impl Into<String>) -> impl FnOnce(CkError) -> OpError {
    move |err| OpError::Ck { op: op.into(), err }
}
