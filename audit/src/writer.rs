//! The writer: appends records to files in one directory, each on disk (fsync)
//! before [`AuditLog::append`] returns, so an action is never acknowledged
//! before its record is durable.
//!
//! One thread owns the files. Appends that arrive while it writes are written
//! together with one fsync (group commit). Files are `audit-<first seq>.jsonl`
//! (20 digits, so names sort in writing order); a new file starts when the
//! current one passes `max_file_bytes`, and the chain runs on across files.
//! `audit.head` holds the last record's `seq` and hash, so a verifier can tell
//! a log cut short. Every `checkpoint_interval` with new records, the head is
//! signed by the [`CheckpointSigner`] (a key in the HSM) as a checkpoint record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use tokio::sync::oneshot;

use crate::record::{checkpoint_message, Event, Record, RecordHash, GENESIS_PREV};

/// The head file's name inside the log directory.
pub const HEAD_FILE: &str = "audit.head";

/// How the writer runs.
#[derive(Clone, Debug)]
pub struct WriterConfig {
    /// The log's directory (created mode 0700 if missing).
    pub dir: PathBuf,
    /// A new file starts once the current one is this large.
    pub max_file_bytes: u64,
    /// How often the head is signed when records were added.
    pub checkpoint_interval: Duration,
    /// How often the SVID signing counts are written as one record.
    pub svid_summary_interval: Duration,
    /// Names the writer in its `log_opened` records.
    pub writer: String,
}

/// Signs checkpoints with a key that never leaves its store.
pub trait CheckpointSigner: Send + 'static {
    /// The key's label, recorded in each checkpoint.
    fn key_label(&self) -> String;
    /// Finds (or creates) the key and returns its DER SubjectPublicKeyInfo.
    fn public_key_der(&mut self) -> Result<Vec<u8>, String>;
    /// ECDSA P-256 with SHA-256 over `message`, as r||s (64 bytes).
    fn sign(&mut self, message: &[u8]) -> Result<Vec<u8>, String>;
}

/// What can go wrong with the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file of the log cannot be read or written.
    #[error("audit log {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The last record on disk does not parse: appending would extend a chain
    /// nobody can check.
    #[error(
        "audit log {path}: the last record does not parse ({reason}); run `ironroot-server \
         audit verify` on the directory, and move the damaged file aside to start a new chain"
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        reason: String,
    },
    /// Another process writes this log (two servers configured with one directory).
    #[error(
        "audit log {dir} is being written by another process (two servers with the same \
         [audit] dir or data_dir?); each server needs its own"
    )]
    InUse {
        /// The directory.
        dir: PathBuf,
    },
    /// The writer thread has stopped (after an I/O failure, or at shutdown).
    #[error("the audit log is not being written: {reason}")]
    Stopped {
        /// Why.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError + '_ {
    move |source| AuditError::Io {
        path: path.to_owned(),
        source,
    }
}

enum Command {
    Append(Event, oneshot::Sender<Result<u64, String>>),
    Close(oneshot::Sender<()>),
}

/// The writing end of the log. Cheap to share (`Arc`).
pub struct AuditLog {
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    problem: Mutex<Option<String>>,
    /// Set when a write failed: nothing is appended any more.
    stopped: std::sync::atomic::AtomicBool,
    x509: AtomicU64,
    jwt: AtomicU64,
    first_signed: AtomicI64,
    last_signed: AtomicI64,
}

impl Shared {
    fn set_problem(&self, p: Option<String>) {
        *self.problem.lock().unwrap_or_else(PoisonError::into_inner) = p;
    }
}

/// Which SVIDs [`AuditLog::count_svid`] counts.
#[derive(Clone, Copy, Debug)]
pub enum SvidKind {
    /// An X.509-SVID.
    X509,
    /// A JWT-SVID.
    Jwt,
}

impl AuditLog {
    /// Opens the log in `cfg.dir` (continuing its chain, or starting one), removes
    /// a record cut short by a crash, writes a `log_opened` record and starts the
    /// writer thread. Fails when the last record on disk does not parse.
    pub fn open(
        cfg: WriterConfig,
        signer: Option<Box<dyn CheckpointSigner>>,
    ) -> Result<Self, AuditError> {
        create_dir_private(&cfg.dir)?;
        let mut files = Files::open(&cfg)?;
        let removed_partial_bytes = files.removed_partial_bytes;
        files.write_batch(
            &[Event::LogOpened {
                writer: cfg.writer.clone(),
                removed_partial_bytes,
            }],
            now(),
        )?;
        if removed_partial_bytes > 0 {
            tracing::warn!(
                bytes = removed_partial_bytes,
                "audit log: removed a record cut short by a crash (never acknowledged)"
            );
        }
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::channel();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || run(files, cfg, signer, rx, thread_shared))
            .map_err(|e| AuditError::Stopped {
                reason: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Self {
            tx: Mutex::new(Some(tx)),
            shared,
        })
    }

    /// Appends `event`; returns its `seq` once it is on disk.
    pub async fn append(&self, event: Event) -> Result<u64, AuditError> {
        let (reply, rx) = oneshot::channel();
        {
            let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(tx) = tx.as_ref() else {
                return Err(AuditError::Stopped {
                    reason: "the log was closed".into(),
                });
            };
            tx.send(Command::Append(event, reply))
                .map_err(|_| self.stopped())?;
        }
        match rx.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(reason)) => Err(AuditError::Stopped { reason }),
            Err(_) => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> AuditError {
        AuditError::Stopped {
            reason: self
                .problem()
                .unwrap_or_else(|| "the writer thread ended".into()),
        }
    }

    /// Counts one signed SVID; the counts are written as one record per
    /// `svid_summary_interval` (signing is not held up by the log).
    pub fn count_svid(&self, kind: SvidKind) {
        let t = now();
        let _ =
            self.shared
                .first_signed
                .compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
        self.shared.last_signed.store(t, Ordering::Relaxed);
        match kind {
            SvidKind::X509 => &self.shared.x509,
            SvidKind::Jwt => &self.shared.jwt,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Whether appends can succeed: false after a write failed or the log was closed.
    pub fn is_writable(&self) -> bool {
        !self.shared.stopped.load(Ordering::Relaxed)
            && self
                .tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_some()
    }

    /// What is wrong with the log right now (for health checks), if anything.
    pub fn problem(&self) -> Option<String> {
        self.shared
            .problem
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Writes the pending SVID counts and a last checkpoint, then stops the writer.
    pub async fn close(&self) {
        let (reply, rx) = oneshot::channel();
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(tx) = tx {
            if tx.send(Command::Close(reply)).is_ok() {
                let _ = rx.await;
            }
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn create_dir_private(dir: &Path) -> Result<(), AuditError> {
    use std::os::unix::fs::DirBuilderExt;
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(io_err(dir)(e)),
    }
}

/// The files on disk and the chain's current end.
struct Files {
    /// Held while the writer lives: a second writer would fork the chain.
    _lock: nix::fcntl::Flock<File>,
    dir: PathBuf,
    max_file_bytes: u64,
    current: File,
    current_path: PathBuf,
    current_len: u64,
    /// The last record's seq and hash (None before the first record).
    head: Option<(u64, RecordHash)>,
    removed_partial_bytes: u64,
    records_since_checkpoint: u64,
}

fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The log's files in writing order.
pub fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    names.sort();
    Ok(names)
}

impl Files {
    fn open(cfg: &WriterConfig) -> Result<Self, AuditError> {
        let lock_path = cfg.dir.join("audit.lock");
        let lock_file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|_| AuditError::InUse {
                dir: cfg.dir.clone(),
            })?;
        let existing = log_files(&cfg.dir).map_err(io_err(&cfg.dir))?;
        let path = existing
            .last()
            .cloned()
            .unwrap_or_else(|| cfg.dir.join(file_name(0)));
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&path))?;
        // A crash mid-write leaves a last line without its newline: it was never
        // acknowledged, so it goes (the next record says how many bytes).
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let removed = (bytes.len() - complete) as u64;
        if removed > 0 {
            file.set_len(complete as u64).map_err(io_err(&path))?;
            file.sync_data().map_err(io_err(&path))?;
        }
        let head = match bytes[..complete].split(|b| *b == b'\n').rev().nth(1) {
            None | Some([]) => None,
            Some(line) => {
                let r: Record = serde_json::from_slice(line).map_err(|e| AuditError::Damaged {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Some((r.seq, RecordHash::of_line(line)))
            }
        };
        file.seek(SeekFrom::End(0)).map_err(io_err(&path))?;
        Ok(Self {
            _lock: lock,
            dir: cfg.dir.clone(),
            max_file_bytes: cfg.max_file_bytes,
            current: file,
            current_path: path,
            current_len: complete as u64,
            head,
            removed_partial_bytes: removed,
            records_since_checkpoint: 0,
        })
    }

    /// Appends `events` as consecutive records with one fsync; returns the
    /// first one's seq.
    fn write_batch(&mut self, events: &[Event], time: i64) -> Result<u64, AuditError> {
        let first = self.head.map_or(0, |(s, _)| s + 1);
        if self.current_len >= self.max_file_bytes {
            self.start_file(first)?;
        }
        let mut buf = Vec::new();
        let mut head = self.head;
        for event in events {
            let (seq, prev) = match head {
                None => (0, RecordHash(GENESIS_PREV)),
                Some((s, h)) => (s + 1, h),
            };
            let line = Record {
                seq,
                time,
                prev,
                event: event.clone(),
            }
            .to_line();
            head = Some((seq, RecordHash::of_line(&line)));
            buf.extend_from_slice(&line);
            buf.push(b'\n');
        }
        let path = self.current_path.clone();
        self.current.write_all(&buf).map_err(io_err(&path))?;
        self.current.sync_data().map_err(io_err(&path))?;
        self.current_len += buf.len() as u64;
        self.head = head;
        self.records_since_checkpoint += events.len() as u64;
        self.write_head_file();
        Ok(first)
    }

    fn start_file(&mut self, first_seq: u64) -> Result<(), AuditError> {
        let path = self.dir.join(file_name(first_seq));
        self.current = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // The new name must survive a crash along with the records in it.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        self.current_path = path;
        self.current_len = 0;
        Ok(())
    }

    /// Best effort: the head file only lets a verifier notice records cut off the
    /// end; it lags by at most the last batch after a crash, which verify accepts.
    fn write_head_file(&self) {
        let Some((seq, hash)) = self.head else { return };
        let tmp = self.dir.join(format!("{HEAD_FILE}.tmp"));
        let ok = std::fs::write(&tmp, format!("{seq} {hash}\n"))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(HEAD_FILE)));
        if let Err(e) = ok {
            tracing::warn!(error = %e, "audit log: cannot update {HEAD_FILE}");
        }
    }
}

/// Reads `audit.head` ("<seq> <hash>"), if present.
pub fn read_head_file(dir: &Path) -> std::io::Result<Option<(u64, RecordHash)>> {
    let text = match std::fs::read_to_string(dir.join(HEAD_FILE)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not \"<seq> <hash>\"");
    let (seq, hash) = text.trim().split_once(' ').ok_or_else(bad)?;
    Ok(Some((
        seq.parse().map_err(|_| bad())?,
        RecordHash::from_hex(hash).ok_or_else(bad)?,
    )))
}

fn run(
    mut files: Files,
    cfg: WriterConfig,
    mut signer: Option<Box<dyn CheckpointSigner>>,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
) {
    let mut next_checkpoint = Instant::now() + cfg.checkpoint_interval;
    let mut next_summary = Instant::now() + cfg.svid_summary_interval;
    loop {
        let wait = next_checkpoint
            .min(next_summary)
            .saturating_duration_since(Instant::now());
        let mut batch = Vec::new();
        let mut close = None;
        match rx.recv_timeout(wait) {
            Ok(Command::Append(e, r)) => batch.push((e, r)),
            Ok(Command::Close(r)) => close = Some(r),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Group commit: whatever else is waiting goes in the same write.
        while close.is_none() {
            match rx.try_recv() {
                Ok(Command::Append(e, r)) => batch.push((e, r)),
                Ok(Command::Close(r)) => close = Some(r),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let events: Vec<Event> = batch.iter().map(|(e, _)| e.clone()).collect();
            match files.write_batch(&events, now()) {
                Ok(first) => {
                    for (i, (_, reply)) in batch.into_iter().enumerate() {
                        let _ = reply.send(Ok(first + i as u64));
                    }
                }
                Err(e) => {
                    // Nothing is acknowledged from here on: every later append fails
                    // with this reason, and health says so.
                    let reason = e.to_string();
                    tracing::error!(error = %reason, "audit log: write failed; actions that must be audited are refused");
                    shared.set_problem(Some(reason.clone()));
                    shared.stopped.store(true, Ordering::Relaxed);
                    for (_, reply) in batch {
                        let _ = reply.send(Err(reason.clone()));
                    }
                    fail_all(&rx, &reason);
                    return;
                }
            }
        }
        let now_i = Instant::now();
        if now_i >= next_summary || close.is_some() {
            write_svid_summary(&mut files, &shared);
            next_summary = now_i + cfg.svid_summary_interval;
        }
        if now_i >= next_checkpoint || close.is_some() {
            if let Some(s) = signer.as_mut() {
                checkpoint(&mut files, s.as_mut(), &shared);
            }
            next_checkpoint = now_i + cfg.checkpoint_interval;
        }
        if let Some(reply) = close {
            // The lock goes with the files: free before the closer hears back.
            drop(files);
            let _ = reply.send(());
            return;
        }
    }
}

fn fail_all(rx: &mpsc::Receiver<Command>, reason: &str) {
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Append(_, reply) => {
                let _ = reply.send(Err(reason.to_owned()));
            }
            Command::Close(reply) => {
                let _ = reply.send(());
                return;
            }
        }
    }
}

fn write_svid_summary(files: &mut Files, shared: &Shared) {
    let x509 = shared.x509.swap(0, Ordering::Relaxed);
    let jwt = shared.jwt.swap(0, Ordering::Relaxed);
    if x509 == 0 && jwt == 0 {
        return;
    }
    let first = shared.first_signed.swap(0, Ordering::Relaxed);
    let last = shared.last_signed.load(Ordering::Relaxed);
    let event = Event::SvidsSigned {
        x509,
        jwt,
        first,
        last,
    };
    if let Err(e) = files.write_batch(&[event], now()) {
        tracing::error!(error = %e, "audit log: cannot write the SVID signing counts");
        shared.set_problem(Some(e.to_string()));
    }
}

fn checkpoint(files: &mut Files, signer: &mut dyn CheckpointSigner, shared: &Shared) {
    let Some((covers, head)) = files.head else {
        return;
    };
    if files.records_since_checkpoint == 0 {
        return;
    }
    let signed = signer.public_key_der().and_then(|der| {
        signer
            .sign(&checkpoint_message(covers, &head))
            .map(|sig| (der, sig))
    });
    match signed {
        Ok((der, sig)) => {
            let b64 = base64::engine::general_purpose::STANDARD;
            let event = Event::Checkpoint {
                covers,
                head,
                key: signer.key_label(),
                public_key: b64.encode(der),
                signature: b64.encode(sig),
            };
            match files.write_batch(&[event], now()) {
                Ok(_) => {
                    files.records_since_checkpoint = 0;
                    shared.set_problem(None);
                }
                Err(e) => shared.set_problem(Some(e.to_string())),
            }
        }
        Err(reason) => {
            // Records go on being written; the next interval tries again.
            let p = format!(
                "audit checkpoint cannot be signed ({reason}): records since seq {} are not yet sealed",
                covers + 1 - files.records_since_checkpoint.min(covers + 1)
            );
            tracing::warn!("{p}");
            shared.set_problem(Some(p));
        }
    }
}
