//! `audit verify` and `audit public-key`: offline, no server needed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use ironroot_audit::{verify_dir, KeySource, RecordHash, VerifyOptions};
use serde_json::json;

use crate::cli::{AuditCommand, AuditVerifyArgs, Output};
use crate::config::ServerConfig;

/// Runs an `audit` verb; its exit status (verify: 0 intact, 1 broken, 2 not checkable).
pub fn audit(cmd: AuditCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        // Not checkable is not "broken": its own exit status, so scripts can tell them apart.
        AuditCommand::Verify(args) => Ok(verify(&args).unwrap_or_else(|e| {
            eprintln!("error: the audit log cannot be checked: {e:#}");
            ExitCode::from(2)
        })),
        AuditCommand::PublicKey { config } => {
            let cfg = ServerConfig::load(&config)?;
            let der = checkpoint_key(&cfg)?;
            print!("{}", pem::encode(&pem::Pem::new("PUBLIC KEY", der)));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The checkpoint key's public key, read from the configured key manager.
fn checkpoint_key(cfg: &ServerConfig) -> anyhow::Result<Vec<u8>> {
    let label = cfg.audit.key_label(&cfg.ca.key_label_prefix);
    let km = crate::run::open_key_manager(cfg)?;
    match km.find(&label)? {
        Some(k) => Ok(k.public_key_der),
        None => bail!(
            "no key '{label}' in {}: the server creates it at its first checkpoint \
             ([audit] checkpoint_interval after the first record)",
            km.describe()
        ),
    }
}

fn read_public_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match pem::parse(&bytes) {
        Ok(p) if p.tag() == "PUBLIC KEY" => Ok(p.into_contents()),
        Ok(p) => bail!(
            "{}: a PEM {} block, not PUBLIC KEY",
            path.display(),
            p.tag()
        ),
        // Not PEM: taken as DER; verify says if it is not a P-256 key.
        Err(_) => Ok(bytes),
    }
}

fn parse_head(s: &str) -> anyhow::Result<(u64, RecordHash)> {
    let (seq, hash) = s
        .split_once(':')
        .context("--head must be SEQ:HASH (the record number and its 64-hex-digit hash)")?;
    Ok((
        seq.parse().context("--head: SEQ is not a number")?,
        RecordHash::from_hex(hash).context("--head: HASH is not 64 hex digits")?,
    ))
}

fn verify(args: &AuditVerifyArgs) -> anyhow::Result<ExitCode> {
    let cfg = args.config.as_deref().map(ServerConfig::load).transpose()?;
    let dir: PathBuf = match (&args.dir, &cfg) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => c.audit.dir(&c.data_dir),
        (None, None) => {
            bail!("give the log's directory (--dir) or the server's configuration (-c)")
        }
    };
    let public_key = match (&args.public_key, &cfg) {
        (Some(p), _) => Some(read_public_key(p)?),
        (None, Some(c)) => Some(checkpoint_key(c).context(
            "cannot read the checkpoint key from the key manager (pass --public-key instead)",
        )?),
        (None, None) => None,
    };
    let opts = VerifyOptions {
        public_key,
        expected_head: args.head.as_deref().map(parse_head).transpose()?,
        allow_pruned_start: args.allow_pruned_start,
    };
    let verdict = verify_dir(&dir, opts)?;
    let json_out = args.output == Output::Json;
    match verdict {
        Ok(r) => {
            let key = match r.key {
                KeySource::Pinned => "the pinned key",
                KeySource::FromLog => {
                    "the key the log carries (not anchored: pin one with --public-key or -c)"
                }
                _ => "no checkpoint yet",
            };
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "intact": true,
                        "records": r.records,
                        "first_seq": r.first_seq,
                        "last_seq": r.last_seq,
                        "head": r.head.to_hex(),
                        "checkpoints": r.checkpoints,
                        "last_checkpoint": r.last_checkpoint,
                        "unsealed": r.unsealed,
                        "key": format!("{:?}", r.key),
                    }))?
                );
            } else {
                println!(
                    "audit log intact: {} records (seq {}..{}), head {}",
                    r.records, r.first_seq, r.last_seq, r.head
                );
                println!(
                    "{} checkpoint(s) verified against {key}; {} record(s) after the last one (not yet sealed)",
                    r.checkpoints, r.unsealed
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(b) => {
            if json_out {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "intact": false,
                        "file": b.file,
                        "line": b.line,
                        "seq": b.seq,
                        "broken": b.rule.to_string(),
                    }))?
                );
            }
            eprintln!("audit log BROKEN: {b}");
            Ok(ExitCode::from(1))
        }
    }
}
