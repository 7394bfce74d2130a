//! Carries out the rotation schedule of `journal::plan`: makes keys in the key
//! manager, signs CA certificates, persists the journal, and swaps the active
//! signers. Keys are found again by label after a restart.

use std::sync::Arc;

use ironroot_hsm::{KeyAlgorithm, KeyInfo, Signer};
use rand::RngCore;
use rcgen::Issuer;
use tracing::{info, warn};

use super::journal::{self, CaJournal, JwtSlot, Slot, SlotStatus, Step, X509Slot};
use super::signing_key::HsmKey;
use super::stored_journal::{self, StoredJournal, UnsettledKeys, Written, MAX_ATTEMPTS};
use super::upstream::Certified;
use super::{
    x509, ActiveJwt, ActiveX509, CaError, CertificateAuthority, CertificateError, JournalError,
    KeyError,
};

/// Whether a pass runs the rotation schedule or only takes up the stored journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Schedule {
    /// Make the steps that are due.
    Run,
    /// Follow what another server wrote.
    Follow,
}

/// The two key kinds, each with its own schedule and slots in the journal.
#[derive(Debug, Clone, Copy)]
enum KeyKind {
    X509,
    Jwt,
}

/// Applies one step of one kind's schedule to its `slots` (`new_slot` makes a key and its
/// slot with the given status); returns the label of a key to destroy once persisted.
fn apply_step<S: Slot>(
    slots: &mut Vec<S>,
    step: Step,
    now: i64,
    what: &str,
    new_slot: impl FnOnce(SlotStatus) -> Result<S, CaError>,
) -> Result<Option<String>, CaError> {
    match step {
        Step::CreateActive => {
            for s in slots
                .iter_mut()
                .filter(|s| s.status() == SlotStatus::Active)
            {
                s.set_status(SlotStatus::Old);
            }
            slots.push(new_slot(SlotStatus::Active)?);
        }
        Step::Prepare => slots.push(new_slot(SlotStatus::Prepared)?),
        Step::Activate => {
            journal::activate_prepared(slots, now);
            info!("activated the prepared {what}");
        }
        Step::Prune { key_label } => {
            slots.retain(|s| s.key_label() != key_label);
            return Ok(Some(key_label));
        }
    }
    Ok(None)
}

fn new_label(prefix: &str, kind: &str, now: i64) -> String {
    let mut r = [0u8; 4];
    rand::thread_rng().fill_bytes(&mut r);
    format!("{prefix}-{kind}-{now}-{}", hex::encode(r))
}

impl CertificateAuthority {
    /// Brings the keys up to date with the schedule at `now`, starting from the journal as
    /// stored (another server of the trust domain may have rotated). Returns whether the
    /// published bundle changed.
    ///
    /// A failed check keeps the active keys unless the failure condemns one of them
    /// ([`CaError::condemns_active_key`]: gone, extractable, replaced); an HSM that cannot
    /// be reached, a failed PKCS#11 call or a store error fail only this attempt, which the
    /// health check reports until a later check succeeds.
    pub(crate) fn rotate(&self, now: i64) -> Result<bool, CaError> {
        self.update(now, Schedule::Run)
    }

    /// Adopts the journal as stored when another server of the trust domain changed it,
    /// without running the schedule (the store's feed announced a change). Returns whether
    /// the published bundle changed.
    pub(crate) fn follow_journal(&self, now: i64) -> Result<bool, CaError> {
        self.update(now, Schedule::Follow)
    }

    fn update(&self, now: i64, schedule: Schedule) -> Result<bool, CaError> {
        let mut unsettled = self
            .rotation
            .lock()
            .map_err(|_| JournalError::LockPoisoned {
                what: "rotation lock",
            })?;
        let keys = stored_journal::load(self.store.as_ref()).and_then(|stored| {
            unsettled.settle(&stored, self.km.as_ref());
            self.update_from(stored, now, schedule, &mut unsettled)
        });
        // Also after a failed pass: the in-memory key hangs on the active authority, which a
        // failure to reach the HSM keeps.
        let memory = self.refresh_memory_key(now);
        let result = match (keys, memory) {
            (Ok(changed), Ok(_)) => Ok(changed),
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
        self.note_rotation(&result);
        result
    }

    /// [`update`](Self::update) from `stored`, with the rotation lock held.
    pub(super) fn update_from(
        &self,
        mut stored: StoredJournal,
        now: i64,
        schedule: Schedule,
        unsettled: &mut UnsettledKeys,
    ) -> Result<bool, CaError> {
        let adopted = self.differs_from_state(&stored.journal)?;
        let (stepped, steps) = match schedule {
            Schedule::Run => self.run_steps(&mut stored, now, unsettled),
            Schedule::Follow => (false, Ok(())),
        };
        let changed = adopted || stepped;
        let journal = stored.journal;
        if let Err(e) = steps {
            // Keep what was persisted before the failure, so the next pass
            // continues from there instead of redoing it.
            if let Ok(mut state) = self.state.write() {
                state.journal = journal;
            }
            return Err(e);
        }
        // Built on every pass: this re-checks that the keys are still in the
        // token and still non-extractable. When the token says a key is gone or unsafe,
        // signing with it stops (fail closed); when the token cannot be asked, the keys
        // checked at the last pass stay in use.
        let x509 = self.build_active_x509(&journal);
        let jwt = self.build_active_jwt(&journal);
        let mut state = self.state.write().map_err(|_| JournalError::LockPoisoned {
            what: "CA state lock",
        })?;
        state.journal = journal;
        let mut failure = None;
        match x509 {
            Ok(a) => {
                let same = state
                    .x509
                    .as_ref()
                    .is_some_and(|x| x.key_label == a.key_label);
                if changed || !same {
                    state.x509 = Some(Arc::new(a));
                }
            }
            Err(e) => {
                if e.condemns_active_key() {
                    state.x509 = None;
                }
                failure = Some(e);
            }
        }
        match jwt {
            Ok(a) => {
                let same = state.jwt.as_ref().is_some_and(|j| j.key_id == a.key_id);
                if changed || !same {
                    state.jwt = Some(Arc::new(a));
                }
            }
            Err(e) => {
                if e.condemns_active_key() {
                    state.jwt = None;
                }
                failure = failure.or(Some(e));
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(changed),
        }
    }

    /// Whether `journal` is not what this server publishes and signs with: another server
    /// changed it, or a step persisted before a failure was never taken up.
    fn differs_from_state(&self, journal: &CaJournal) -> Result<bool, CaError> {
        let state = self.read_state()?;
        let x509 = journal
            .x509
            .iter()
            .find(|s| s.status == SlotStatus::Active)
            .map(|s| s.key_label.as_str());
        let jwt = journal
            .jwt
            .iter()
            .find(|s| s.status == SlotStatus::Active)
            .map(|s| s.key_id.as_str());
        Ok(*journal != state.journal
            || x509 != state.x509.as_ref().map(|a| a.key_label.as_str())
            || jwt != state.jwt.as_ref().map(|a| a.key_id.as_str()))
    }

    /// Applies the schedule's steps. Each step is persisted (and flushed)
    /// before the next one and before anything signs with a new key; an
    /// expired key is destroyed only once the journal no longer names it.
    /// A step another server made first is not made again: its journal is
    /// planned from instead (`stored_journal`).
    /// A write that fails without a definite answer leaves the step's new key in
    /// `unsettled`, for a later check to keep or destroy.
    fn run_steps(
        &self,
        stored: &mut StoredJournal,
        now: i64,
        unsettled: &mut UnsettledKeys,
    ) -> (bool, Result<(), CaError>) {
        let mut changed = false;
        'plan: for _ in 0..MAX_ATTEMPTS {
            let journal = &stored.journal;
            // The two key kinds have independent schedules: plan both first.
            let steps: Vec<(KeyKind, Step)> = journal::plan(&journal.x509, now)
                .into_iter()
                .map(|s| (KeyKind::X509, s))
                .chain(
                    journal::plan(&journal.jwt, now)
                        .into_iter()
                        .map(|s| (KeyKind::Jwt, s)),
                )
                .collect();
            for (kind, step) in steps {
                let mut next = stored.journal.clone();
                let destroy = match self.apply(&mut next, kind, step, now) {
                    Ok(d) => d,
                    Err(e) => return (changed, Err(e)),
                };
                let written = stored
                    .replace(self.store.as_ref(), self.km.as_ref(), next, unsettled)
                    .map(|w| (destroy, w));
                match written {
                    Ok((destroy, Written::Stored)) => {
                        changed = true;
                        // The journal moved on: a key of an earlier unanswered write that it
                        // does not name can no longer be stored.
                        unsettled.settle(stored, self.km.as_ref());
                        if let Some(label) = destroy {
                            self.destroy(&label);
                        }
                    }
                    Ok((_, Written::Lost(theirs))) => {
                        *stored = theirs;
                        changed = true;
                        continue 'plan;
                    }
                    Err(e) => return (changed, Err(e)),
                }
            }
            return (changed, Ok(()));
        }
        (
            changed,
            Err(JournalError::Contended {
                attempts: MAX_ATTEMPTS,
            }
            .into()),
        )
    }

    /// Finds a journal key in the key manager; fails closed when it is gone
    /// or has become extractable.
    fn find_key(&self, label: &str) -> Result<KeyInfo, CaError> {
        self.km
            .find(label)
            .map_err(|source| KeyError::Lookup {
                label: label.to_string(),
                source,
            })?
            .ok_or_else(|| {
                KeyError::Missing {
                    label: label.to_string(),
                    key_manager: self.km.describe(),
                }
                .into()
            })
    }

    fn generate(&self, label: &str, alg: KeyAlgorithm) -> Result<KeyInfo, CaError> {
        self.km.generate(label, alg).map_err(|source| {
            KeyError::Generate {
                label: label.to_string(),
                source,
            }
            .into()
        })
    }

    fn destroy(&self, label: &str) {
        match self.km.destroy(label) {
            Ok(()) => info!(key = label, "destroyed expired CA key"),
            Err(e) => warn!(key = label, error = %e, "could not destroy expired CA key"),
        }
    }

    fn new_x509_slot(&self, now: i64, status: SlotStatus) -> Result<X509Slot, CaError> {
        let label = new_label(&self.settings.key_label_prefix, "x509", now);
        let info = self.generate(&label, self.settings.key_algorithm)?;
        let key = HsmKey::new(Signer::new(self.km.clone(), info))?;
        let ttl = self.settings.ca_ttl.as_secs() as i64;
        // The schedule counts from issuance; only the certificate is back-dated.
        let not_before = now;
        let certified = match &self.upstream {
            Some(up) => match up.certify(&key, &self.subject(), now, ttl) {
                Ok(c) => c,
                Err(e) => {
                    // The key never made it into the journal: do not leave it behind, or an
                    // upstream outage would leave a key per rotation check.
                    self.destroy(&label);
                    return Err(e);
                }
            },
            None => {
                let not_after = now + ttl;
                let params =
                    x509::ca_params(&self.subject(), now - x509::BACKDATE_SECS, not_after)?;
                let c = params.self_signed(&key).map_err(|e| key.explain(e))?;
                Certified {
                    cert_der: c.der().to_vec(),
                    chain: Vec::new(),
                    roots: Vec::new(),
                    not_after,
                }
            }
        };
        let not_after = certified.not_after;
        info!(key = %label, not_after, status = ?status, "new X.509 CA key");
        Ok(X509Slot {
            key_label: label,
            status,
            cert_der: certified.cert_der,
            upstream_chain: certified.chain,
            upstream_roots: certified.roots,
            not_before,
            not_after,
        })
    }

    fn new_jwt_slot(&self, now: i64, status: SlotStatus) -> Result<JwtSlot, CaError> {
        let label = new_label(&self.settings.key_label_prefix, "jwt", now);
        // JWT-SVIDs are ES256 whatever the X.509 CA uses.
        let info = self.generate(&label, KeyAlgorithm::EcP256)?;
        let not_after = now + self.settings.ca_ttl.as_secs() as i64;
        info!(key = %label, not_after, status = ?status, "new JWT key");
        Ok(JwtSlot {
            key_label: label,
            key_id: super::jwt::new_key_id(),
            status,
            public_key_der: info.public_key_der,
            not_before: now,
            not_after,
        })
    }

    /// Applies one step of `kind`'s schedule; returns the label of a key to destroy once
    /// persisted.
    fn apply(
        &self,
        j: &mut CaJournal,
        kind: KeyKind,
        step: Step,
        now: i64,
    ) -> Result<Option<String>, CaError> {
        match kind {
            KeyKind::X509 => apply_step(&mut j.x509, step, now, "X.509 CA key", |status| {
                self.new_x509_slot(now, status)
            }),
            KeyKind::Jwt => apply_step(&mut j.jwt, step, now, "JWT key", |status| {
                self.new_jwt_slot(now, status)
            }),
        }
    }

    fn build_active_x509(&self, j: &CaJournal) -> Result<ActiveX509, CaError> {
        let slot = j
            .x509
            .iter()
            .find(|s| s.status == SlotStatus::Active)
            .ok_or(CaError::NotReady("X.509"))?;
        let info = self.find_key(&slot.key_label)?;
        let key = HsmKey::new(Signer::new(self.km.clone(), info))?;
        if x509::cert_public_key_bits(&slot.cert_der)? != rcgen::PublicKeyData::der_bytes(&key) {
            return Err(KeyError::Mismatch {
                label: slot.key_label.clone(),
                what: "CA certificate",
            }
            .into());
        }
        let cert = rustls_pki_types::CertificateDer::from(slot.cert_der.clone());
        let issuer =
            Issuer::from_ca_cert_der(&cert, key).map_err(CertificateError::JournalCertificate)?;
        let mut chain_after_leaf = Vec::new();
        if self.upstream.is_some() {
            chain_after_leaf.push(slot.cert_der.clone());
            chain_after_leaf.extend(slot.upstream_chain.iter().cloned());
        }
        Ok(ActiveX509 {
            issuer,
            chain_after_leaf,
            not_after: slot.not_after,
            key_label: slot.key_label.clone(),
        })
    }

    fn build_active_jwt(&self, j: &CaJournal) -> Result<ActiveJwt, CaError> {
        let slot = j
            .jwt
            .iter()
            .find(|s| s.status == SlotStatus::Active)
            .ok_or(CaError::NotReady("JWT"))?;
        let info = self.find_key(&slot.key_label)?;
        if info.public_key_der != slot.public_key_der {
            return Err(KeyError::Mismatch {
                label: slot.key_label.clone(),
                what: "JWT key",
            }
            .into());
        }
        Ok(ActiveJwt {
            signer: Signer::new(self.km.clone(), info),
            key_id: slot.key_id.clone(),
            not_after: slot.not_after,
        })
    }
}
