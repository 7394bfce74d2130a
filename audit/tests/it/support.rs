use std::path::Path;
use std::time::Duration;

use ironroot_audit::{AuditLog, CheckpointSigner, Event, WriterConfig};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::EncodePublicKey;

/// A software P-256 key standing in for the HSM key (the server's signer over
/// PKCS#11 is tested with SoftHSM in the server's tests).
pub(crate) struct SoftSigner(pub(crate) p256::ecdsa::SigningKey);

impl SoftSigner {
    pub(crate) fn new(seed: u8) -> Self {
        Self(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap())
    }

    pub(crate) fn public_der(&self) -> Vec<u8> {
        self.0
            .verifying_key()
            .to_public_key_der()
            .unwrap()
            .as_bytes()
            .to_vec()
    }
}

impl CheckpointSigner for SoftSigner {
    fn key_label(&self) -> String {
        "test-audit-key".into()
    }
    fn public_key_der(&mut self) -> Result<Vec<u8>, String> {
        Ok(self.public_der())
    }
    fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, String> {
        let sig: p256::ecdsa::Signature = self.0.sign(message);
        Ok(sig.to_bytes().to_vec())
    }
}

pub(crate) fn config(dir: &Path) -> WriterConfig {
    WriterConfig {
        dir: dir.to_owned(),
        max_file_bytes: 64 * 1024 * 1024,
        // Checkpoints only when the test closes the log, unless it sets its own.
        checkpoint_interval: Duration::from_secs(3600),
        svid_summary_interval: Duration::from_secs(3600),
        writer: "ironroot-audit tests".into(),
    }
}

pub(crate) fn admin(action: &str, target: &str) -> Event {
    Event::Admin {
        actor: "uid:0".into(),
        action: action.into(),
        target: target.into(),
        outcome: "ok".into(),
    }
}

/// A closed log of `n` admin records (+ log_opened, + a final checkpoint).
pub(crate) fn written_log(dir: &Path, n: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let log = AuditLog::open(config(dir), Some(Box::new(SoftSigner::new(7)))).unwrap();
        for i in 0..n {
            log.append(admin("entry.create", &format!("entry-{i}")))
                .await
                .unwrap();
        }
        log.close().await;
    });
}

/// The single log file's path.
pub(crate) fn only_file(dir: &Path) -> std::path::PathBuf {
    let files = ironroot_audit::writer::log_files(dir).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}
