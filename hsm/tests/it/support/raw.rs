//! A plain cryptoki session, independent of the crate under test.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;

use super::{sha256, MODULE, PIN};

/// A plain cryptoki session, independent of the crate, for checking what the token holds and
/// for planting keys the crate must refuse.
pub(crate) struct Raw {
    ctx: Pkcs11,
    slot: cryptoki::slot::Slot,
    session: Option<Session>,
    /// True if this code ran C_Initialize (so it must C_Finalize).
    pub finalize: bool,
}

impl Raw {
    pub(crate) fn open(token: &str) -> Raw {
        let ctx = Pkcs11::new(MODULE).expect("load module");
        let finalize = match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            Ok(()) => true,
            Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
            Err(e) => panic!("C_Initialize: {e}"),
        };
        let slot = ctx
            .get_slots_with_token()
            .expect("slots")
            .into_iter()
            .find(|s| {
                ctx.get_token_info(*s)
                    .map(|i| i.label() == token)
                    .unwrap_or(false)
            })
            .expect("token slot");
        let session = ctx.open_rw_session(slot).expect("session");
        match session.login(UserType::User, Some(&AuthPin::new(PIN.into()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(e) => panic!("login: {e}"),
        }
        Raw {
            ctx,
            slot,
            session: Some(session),
            finalize,
        }
    }

    /// C_CloseAllSessions on the token's slot: every session of this process on it closes
    /// (the key manager's too, and this one's), which also ends the login.
    #[allow(unsafe_code)] // cryptoki does not wrap C_CloseAllSessions
    pub(crate) fn close_all_sessions(&mut self) {
        // SAFETY: dlopen of a library this process has loaded returns the same instance, so
        // this reaches the module the key manager uses; the function list pointers stay valid
        // while `lib` lives, and C_CloseAllSessions takes a slot id by value.
        let rv = unsafe {
            let lib = cryptoki_sys::Pkcs11::new(MODULE).expect("load module");
            lib.C_CloseAllSessions(self.slot.id())
        };
        assert_eq!(rv, cryptoki_sys::CKR_OK, "C_CloseAllSessions");
        // This session is gone too: never close its handle again (the number may be reused
        // by the key manager's new sessions).
        std::mem::forget(self.session.take());
    }

    pub(crate) fn s(&self) -> &Session {
        self.session.as_ref().expect("session")
    }

    pub(crate) fn find(&self, class: ObjectClass, label: &str) -> Vec<ObjectHandle> {
        self.s()
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(label.as_bytes().to_vec()),
            ])
            .expect("find")
    }

    pub(crate) fn bool_attr(&self, h: ObjectHandle, t: AttributeType) -> Option<bool> {
        self.s()
            .get_attributes(h, &[t])
            .expect("attrs")
            .into_iter()
            .find_map(|a| match a {
                Attribute::Sensitive(b)
                | Attribute::Extractable(b)
                | Attribute::NeverExtractable(b)
                | Attribute::AlwaysSensitive(b)
                | Attribute::Token(b)
                | Attribute::Private(b)
                | Attribute::Sign(b)
                | Attribute::Decrypt(b)
                | Attribute::Derive(b) => Some(b),
                _ => None,
            })
    }

    /// An EC P-256 key pair made outside the crate, with the private template given.
    pub(crate) fn ec_pair(
        &self,
        label: &str,
        private_extra: Vec<Attribute>,
    ) -> (ObjectHandle, ObjectHandle) {
        let id = sha256(label.as_bytes())[..16].to_vec();
        let public = vec![
            Attribute::Token(true),
            Attribute::Verify(true),
            Attribute::EcParams(vec![
                0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
            ]),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id.clone()),
        ];
        let mut private = vec![
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sign(true),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(id),
        ];
        private.extend(private_extra);
        self.s()
            .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
            .expect("raw keypair")
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        drop(self.session.take());
        if self.finalize {
            let _ = self.ctx.clone().finalize();
        }
    }
}
