//! `[store]`: which backend holds the server's state, checked and typed.

use std::time::Duration;

use super::file::StoreFile;
use super::{invalid, InvalidOption, DEFAULT_PG_DBNAME, DEFAULT_PG_USER};
use crate::store::postgres::{
    PasswordSource, PostgresConfig, PostgresTarget, PostgresTls, DEFAULT_PORT,
};

/// Where the server keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub(crate) enum StoreConfig {
    /// sled in `data_dir/store` (`kind = "sled"`, the default): one server.
    Sled(SledConfig),
    /// A PostgreSQL database (`kind = "postgres"`), which several servers of the trust
    /// domain may share.
    Postgres(Box<PostgresConfig>),
}

/// `kind = "sled"`'s options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SledConfig {
    /// sled's page cache, in bytes (`cache_bytes`).
    pub(crate) cache_bytes: u64,
}

impl Default for SledConfig {
    fn default() -> Self {
        SledConfig {
            cache_bytes: crate::store::SLED_DEFAULT_CACHE_BYTES,
        }
    }
}

/// The smallest page cache accepted: below it sled reads its log for nearly every lookup.
const MIN_SLED_CACHE_BYTES: u64 = 1024 * 1024;

pub(super) fn store(f: StoreFile) -> Result<StoreConfig, InvalidOption> {
    if let StoreFile::Sled { cache_bytes } = f {
        if cache_bytes < MIN_SLED_CACHE_BYTES {
            return Err(invalid(
                "store.cache_bytes",
                format!(
                    "{cache_bytes} is below the smallest page cache accepted, \
                     {MIN_SLED_CACHE_BYTES} bytes (1 MiB)"
                ),
            ));
        }
        return Ok(StoreConfig::Sled(SledConfig { cache_bytes }));
    }
    let StoreFile::Postgres {
        url,
        host,
        port,
        dbname,
        user,
        password_file,
        password_env,
        tls_ca_file,
        tls_cert_file,
        tls_key_file,
        pool_size,
        connect_timeout,
        wait_timeout,
        statement_timeout,
        changes_kept,
    } = f
    else {
        unreachable!("kind = \"sled\" returned above");
    };
    let target = match (url, host) {
        (Some(url), None) if port.is_none() && dbname.is_none() && user.is_none() => {
            PostgresConfig::check_url(&url).map_err(|e| invalid("store.url", e))?;
            PostgresTarget::Url(url)
        }
        (Some(_), _) => {
            return Err(invalid(
                "store.url",
                "set url or host/port/dbname/user, not both",
            ))
        }
        (None, Some(host)) if !host.is_empty() => PostgresTarget::Params {
            host,
            port: port.unwrap_or(DEFAULT_PORT),
            dbname: dbname.unwrap_or_else(|| DEFAULT_PG_DBNAME.into()),
            user: user.unwrap_or_else(|| DEFAULT_PG_USER.into()),
        },
        (None, _) => {
            return Err(invalid(
                "store.host",
                "kind = \"postgres\" needs url or host (a unix socket directory starts with /)",
            ))
        }
    };
    let password = match (password_file, password_env) {
        (Some(f), None) => Some(PasswordSource::File(f)),
        (None, Some(e)) => Some(PasswordSource::Env(e)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            return Err(invalid(
                "store.password_file",
                "set password_file or password_env, not both",
            ))
        }
    };
    let tls =
        match (tls_ca_file, tls_cert_file, tls_key_file) {
            (None, None, None) => None,
            (Some(ca_file), cert, key) => {
                let client_auth = match (cert, key) {
                    (Some(cert), Some(key)) => Some((cert, key)),
                    (None, None) => None,
                    _ => {
                        return Err(invalid(
                            "store.tls_cert_file",
                            "tls_cert_file and tls_key_file go together",
                        ))
                    }
                };
                Some(PostgresTls {
                    ca_file,
                    client_auth,
                })
            }
            (None, _, _) => return Err(invalid(
                "store.tls_ca_file",
                "a client certificate needs tls_ca_file (the database's certificate is verified)",
            )),
        };
    if let PostgresTarget::Url(url) = &target {
        PostgresConfig::check_url_tls(url, tls.is_some()).map_err(|e| invalid("store.url", e))?;
    }
    if let (PostgresTarget::Params { host, .. }, Some(_)) = (&target, &tls) {
        if host.starts_with('/') {
            return Err(invalid(
                "store.tls_ca_file",
                "a unix socket carries no TLS: set host to the database's name for TLS",
            ));
        }
    }
    if pool_size == 0 {
        return Err(invalid("store.pool_size", "must be at least 1"));
    }
    let positive = |key, d: Duration| match d.is_zero() {
        true => Err(invalid(key, "must be > 0")),
        false => Ok(d),
    };
    if changes_kept == 0 {
        return Err(invalid("store.changes_kept", "must be at least 1"));
    }
    Ok(StoreConfig::Postgres(Box::new(PostgresConfig {
        target,
        password,
        tls,
        pool_size,
        connect_timeout: positive("store.connect_timeout", connect_timeout)?,
        wait_timeout: positive("store.wait_timeout", wait_timeout)?,
        statement_timeout: positive("store.statement_timeout", statement_timeout)?,
        changes_kept,
    })))
}
