//! The server's audit trail: what it records, and when a failure to record
//! stops an action (fail closed).
//!
//! Admin changes and attestations are recorded before the caller is answered;
//! when the log cannot be written, changes are refused up front, and a change
//! already applied is answered with an error that says so. CA rotation steps are
//! recorded as they happen; signed SVIDs are counted into one record per interval.
//! The chain head is signed by a P-256 key in the same key manager as the CA.
//! `ironroot-server audit verify|public-key` ([`cli`]) check a log offline.

pub mod cli;

use std::sync::Arc;

use ironroot_audit::{AuditLog, CheckpointSigner, Event, SvidKind, WriterConfig};
use ironroot_hsm::{HsmError, KeyAlgorithm, KeyManager};
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::config::ServerConfig;

/// The server's handle on its audit log (or on none, with `[audit] enabled = false`).
#[derive(Clone)]
pub(crate) struct Audit {
    log: Option<Arc<AuditLog>>,
}

/// Why the audit log could not be opened at start.
type AuditOpenError = ironroot_audit::AuditError;

impl Audit {
    /// Opens the configured log (writing its `log_opened` record).
    pub(crate) fn open(
        cfg: &ServerConfig,
        km: Arc<dyn KeyManager>,
    ) -> Result<Self, AuditOpenError> {
        let a = &cfg.audit;
        if !a.enabled {
            tracing::warn!("audit log disabled ([audit] enabled = false)");
            return Ok(Self { log: None });
        }
        let dir = a.dir(&cfg.data_dir);
        let signer = HsmCheckpointSigner {
            km,
            label: a.key_label(&cfg.ca.key_label_prefix),
        };
        let log = AuditLog::open(
            WriterConfig {
                dir: dir.clone(),
                max_file_bytes: a.max_file_bytes,
                checkpoint_interval: a.checkpoint_interval,
                svid_summary_interval: a.svid_summary_interval,
                writer: format!("ironroot-server {}", env!("CARGO_PKG_VERSION")),
            },
            Some(Box::new(signer)),
        )?;
        tracing::info!(dir = %dir.display(), "audit log open");
        Ok(Self {
            log: Some(Arc::new(log)),
        })
    }

    /// Refuses a change (or an attestation) before it is made when the log is known to be
    /// unwritable.
    pub(crate) fn check_writable(&self) -> Result<(), Status> {
        match &self.log {
            Some(log) if !log.is_writable() => Err(Status::unavailable(format!(
                "changes are refused while the audit log cannot be written: {}",
                log.problem().unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }

    /// Records an admin call's outcome; an applied change whose record cannot be
    /// written is answered with an error naming that.
    pub(crate) async fn admin<T>(
        &self,
        actor: &str,
        action: &str,
        target: String,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let Some(log) = &self.log else { return result };
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(s) => format!("refused ({:?}): {}", s.code(), s.message()),
        };
        let written = log
            .append(Event::Admin {
                actor: actor.to_owned(),
                action: action.to_owned(),
                target,
                outcome,
            })
            .await;
        match (written, result) {
            (Ok(_), r) | (Err(_), r @ Err(_)) => r,
            (Err(e), Ok(_)) => Err(Status::unavailable(format!(
                "{action} was applied, but its audit record could not be written ({e}); \
                 further changes are refused until the audit log is writable"
            ))),
        }
    }

    /// Records a node attestation; an accepted one is not answered unless recorded.
    pub(crate) async fn attestation(
        &self,
        attestor: &str,
        agent_id: &str,
        peer: &str,
        refusal: Option<&str>,
    ) -> Result<(), Status> {
        let Some(log) = &self.log else { return Ok(()) };
        log.append(Event::Attestation {
            attestor: attestor.to_owned(),
            agent_id: agent_id.to_owned(),
            peer: peer.to_owned(),
            outcome: refusal.map_or_else(|| "accepted".to_owned(), |r| format!("refused: {r}")),
        })
        .await
        .map(|_| ())
        .map_err(|e| {
            Status::unavailable(format!(
                "the attestation cannot be recorded in the audit log ({e}); try again later"
            ))
        })
    }

    /// Records a CA step; a failure is logged (the CA's state is in the journal either way).
    pub(crate) async fn ca(&self, step: &str, authority: String) {
        let Some(log) = &self.log else { return };
        if let Err(e) = log
            .append(Event::Ca {
                step: step.to_owned(),
                authority,
            })
            .await
        {
            tracing::error!(error = %e, step, "audit log: cannot record a CA step");
        }
    }

    /// Counts one signed SVID (written in batches).
    pub(crate) fn count_svid(&self, kind: SvidKind) {
        if let Some(log) = &self.log {
            log.count_svid(kind);
        }
    }

    /// What is wrong with the log, for healthcheck.
    pub(crate) fn problem(&self) -> Option<String> {
        self.log.as_ref().and_then(|l| l.problem())
    }

    /// Whether changes can be recorded (for healthcheck: unhealthy when not).
    pub(crate) fn is_writable(&self) -> bool {
        self.log.as_ref().is_none_or(|l| l.is_writable())
    }

    /// Writes the pending counts and a final checkpoint.
    pub(crate) async fn close(&self) {
        if let Some(log) = &self.log {
            log.close().await;
        }
    }
}

/// Signs checkpoints with a P-256 key in the CA's key manager, created on first use.
struct HsmCheckpointSigner {
    km: Arc<dyn KeyManager>,
    label: String,
}

impl CheckpointSigner for HsmCheckpointSigner {
    fn key_label(&self) -> String {
        self.label.clone()
    }

    fn public_key_der(&mut self) -> Result<Vec<u8>, String> {
        let found = match self.km.find(&self.label) {
            Ok(Some(k)) => k,
            Ok(None) => match self.km.generate(&self.label, KeyAlgorithm::EcP256) {
                Ok(k) => {
                    tracing::info!(key = %self.label, "audit checkpoint key created");
                    k
                }
                // Another server on the same token made it first.
                Err(HsmError::KeyExists { .. }) => self
                    .km
                    .find(&self.label)
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("key '{}' vanished after creation", self.label))?,
                Err(e) => return Err(e.to_string()),
            },
            Err(e) => return Err(e.to_string()),
        };
        if found.algorithm != KeyAlgorithm::EcP256 {
            return Err(format!(
                "key '{}' is {}, the audit checkpoint key must be ec-p256 (set \
                 [audit] checkpoint_key_label to another label)",
                self.label, found.algorithm
            ));
        }
        Ok(found.public_key_der)
    }

    fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, String> {
        self.km
            .sign_digest(&self.label, &Sha256::digest(message))
            .map_err(|e| e.to_string())
    }
}
