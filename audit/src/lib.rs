//! ironroot's tamper-evident audit log.
//!
//! Every record is a JSON line naming the SHA-256 of the line before it
//! ([`record`]); the head of the chain is signed from time to time by a key that
//! never leaves the HSM ([`Event::Checkpoint`]); [`verify_log`] checks a log and
//! names the first broken link ([`verify`], pure, fuzzed); [`AuditLog`] writes
//! one, each record on disk before the action it records is acknowledged
//! ([`writer`]).

#![warn(missing_docs)]

pub mod record;
pub mod verify;
pub mod writer;

use std::path::{Path, PathBuf};

pub use record::{Event, Record, RecordHash};
pub use verify::{verify_log, Broken, ChainBreak, KeySource, LogFile, Report, VerifyOptions};
pub use writer::{AuditError, AuditLog, CheckpointSigner, SvidKind, WriterConfig};

/// Why a log directory could not be checked at all (as opposed to a broken chain).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadLogError {
    /// A file cannot be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is not a record ([`verify_dir`] says which rule that breaks).
    #[error("{path}, line {line}: not an audit record ({reason})")]
    NotARecord {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's complaint.
        reason: String,
    },
    /// The directory holds no `audit-*.jsonl` file.
    #[error("{dir} holds no audit log files (audit-*.jsonl)")]
    NoFiles {
        /// The directory.
        dir: PathBuf,
    },
}

/// Reads a log directory (its files in order, and the head the writer recorded
/// unless `opts.expected_head` is already set) and checks it.
pub fn verify_dir(
    dir: &Path,
    mut opts: VerifyOptions,
) -> Result<Result<Report, Broken>, ReadLogError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ReadLogError::Io { path, source }
    };
    let paths = writer::log_files(dir).map_err(io(dir))?;
    if paths.is_empty() {
        return Err(ReadLogError::NoFiles {
            dir: dir.to_owned(),
        });
    }
    let mut contents = Vec::with_capacity(paths.len());
    for p in &paths {
        contents.push((p.display().to_string(), std::fs::read(p).map_err(io(p))?));
    }
    if opts.expected_head.is_none() {
        opts.expected_head =
            writer::read_head_file(dir).map_err(io(&dir.join(writer::HEAD_FILE)))?;
    }
    let files: Vec<LogFile<'_>> = contents
        .iter()
        .map(|(name, bytes)| LogFile { name, bytes })
        .collect();
    Ok(verify_log(&files, &opts))
}

/// Every record of a log directory in writing order, for tools and tests that read
/// what was recorded ([`verify_dir`] checks that it was not changed).
pub fn read_records(dir: &Path) -> Result<Vec<Record>, ReadLogError> {
    let paths = writer::log_files(dir).map_err(|source| ReadLogError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| ReadLogError::Io {
            path: path.clone(),
            source,
        })?;
        for (i, line) in text.lines().enumerate() {
            out.push(
                serde_json::from_str(line).map_err(|e| ReadLogError::NotARecord {
                    path: path.clone(),
                    line: i + 1,
                    reason: e.to_string(),
                })?,
            );
        }
    }
    Ok(out)
}
