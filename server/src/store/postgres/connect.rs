//! Reaching PostgreSQL: the store's connection settings, the pool, and which
//! of the client's errors mean "the database cannot be reached now".

use std::path::PathBuf;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::NoTls;

use super::tls::{Connector, PostgresTls};
use super::BACKEND;
use crate::store::StoreError;

/// PostgreSQL's own default port.
pub(crate) const DEFAULT_PORT: u16 = 5432;
/// Connections in the pool.
pub(crate) const DEFAULT_POOL_SIZE: usize = 16;
/// Longest wait for a new connection (then the call fails `Unavailable`).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a free connection of the pool.
pub(crate) const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a statement may run (or wait for a lock) in the database.
pub(crate) const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the database is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostgresTarget {
    /// A connection string in either of libpq's forms
    /// (`postgresql://user@host:port/dbname?…` or `host=… dbname=…`),
    /// without a password.
    Url(String),
    /// The parts. A `host` starting with `/` is the directory of the
    /// server's unix socket.
    Params {
        /// Host name, address, or unix socket directory.
        host: String,
        /// TCP port (for a unix socket: the number in its file name).
        port: u16,
        /// Database name.
        dbname: String,
        /// Role to log in as.
        user: String,
    },
}

/// Where the password comes from: never the configuration file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// A file holding it (a trailing newline is ignored).
    File(PathBuf),
    /// An environment variable holding it.
    Env(String),
}

/// How the store reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Where the database is.
    pub(crate) target: PostgresTarget,
    /// `None`: the server authenticates otherwise (peer, trust, a client certificate).
    pub(crate) password: Option<PasswordSource>,
    /// `None`: no TLS (a unix socket, or a network the operator trusts).
    pub(crate) tls: Option<PostgresTls>,
    /// Connections in the pool (at least 1; the feed listener has its own).
    pub(crate) pool_size: usize,
    /// Longest wait for a new connection.
    pub(crate) connect_timeout: Duration,
    /// Longest wait for a free pooled connection.
    pub(crate) wait_timeout: Duration,
    /// Longest a statement may run in the database.
    pub(crate) statement_timeout: Duration,
    /// Change events kept for servers catching up; older ones are pruned.
    pub changes_kept: u64,
}

impl PostgresConfig {
    /// `target` with every other setting at its default.
    pub fn new(target: PostgresTarget) -> Self {
        PostgresConfig {
            target,
            password: None,
            tls: None,
            pool_size: DEFAULT_POOL_SIZE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            wait_timeout: DEFAULT_WAIT_TIMEOUT,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            changes_kept: super::DEFAULT_CHANGES_KEPT,
        }
    }

    /// Checks a connection string without connecting: that it parses and
    /// holds no password (a password in a config file ends up in backups
    /// and bug reports).
    pub(crate) fn check_url(url: &str) -> Result<(), String> {
        let c: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("not a PostgreSQL connection string: {e}"))?;
        if c.get_password().is_some() {
            return Err("holds a password: set password_file or password_env instead".into());
        }
        Ok(())
    }

    /// Checks a connection string's `sslmode` against the TLS settings: TLS
    /// is asked for in one place only, and never without a way to verify the
    /// database's certificate.
    pub(crate) fn check_url_tls(url: &str, tls: bool) -> Result<(), String> {
        let c: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("not a PostgreSQL connection string: {e}"))?;
        match (c.get_ssl_mode(), tls) {
            (SslMode::Require, false) => Err(
                "sslmode=require without tls_ca_file would not verify the database: set \
                 tls_ca_file (and drop sslmode: TLS is then required)"
                    .into(),
            ),
            (SslMode::Disable, true) => {
                Err("sslmode=disable contradicts tls_ca_file: drop one of them".into())
            }
            _ => Ok(()),
        }
    }

    /// How connections are made (TLS files read now).
    pub(super) fn connector(&self) -> Result<Connector, StoreError> {
        match &self.tls {
            None => Ok(Connector::Plain),
            Some(t) => t.connector(),
        }
    }

    /// The client's settings, the password read now.
    pub(super) fn client_config(&self) -> Result<tokio_postgres::Config, StoreError> {
        let mut c = match &self.target {
            PostgresTarget::Url(url) => {
                Self::check_url(url).map_err(|e| StoreError::backend(BACKEND, e))?;
                url.parse::<tokio_postgres::Config>()
                    .map_err(|e| StoreError::backend(BACKEND, e))?
            }
            PostgresTarget::Params {
                host,
                port,
                dbname,
                user,
            } => {
                let mut c = tokio_postgres::Config::new();
                c.host(host).port(*port).dbname(dbname).user(user);
                c
            }
        };
        if let Some(p) = &self.password {
            c.password(read_password(p)?);
        }
        if self.tls.is_some() {
            if c.get_hosts().iter().any(|h| matches!(h, Host::Unix(_))) {
                return Err(StoreError::backend(
                    BACKEND,
                    "store.tls_ca_file is set but the database is reached by a unix socket, \
                     which carries no TLS: name the database's host instead",
                ));
            }
            // Never fall back to the clear when TLS is configured.
            c.ssl_mode(SslMode::Require);
        } else if c
            .get_hosts()
            .iter()
            .any(|h| matches!(h, Host::Tcp(name) if !is_loopback(name)))
        {
            tracing::warn!(
                "the store's connection to PostgreSQL is not encrypted: set store.tls_ca_file \
                 to reach it over verified TLS"
            );
        }
        c.connect_timeout(self.connect_timeout)
            .application_name("ironroot-server")
            // A peer that vanished (a failed-over database host) is noticed
            // within about a minute, not after the kernel's two hours.
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .tcp_user_timeout(Duration::from_secs(60))
            // A statement stuck behind a lock fails (and rolls back) rather
            // than holding an API call forever.
            .options(format!(
                "-c statement_timeout={}",
                self.statement_timeout.as_millis().max(1)
            ));
        Ok(c)
    }

    /// The pool. Connections are made on first use: a database that is down
    /// at start-up fails the schema check, not this.
    pub(super) fn pool(
        &self,
        client: tokio_postgres::Config,
        connector: Connector,
    ) -> Result<Pool, StoreError> {
        let settings = ManagerConfig {
            // A connection the server closed is noticed by its task and
            // dropped here; a query on one that died silently fails
            // `Unavailable` once and the next call gets a fresh one.
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match connector {
            Connector::Plain => Manager::from_config(client, NoTls, settings),
            Connector::Tls(tls) => Manager::from_config(client, tls, settings),
        };
        Pool::builder(manager)
            .max_size(self.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(self.wait_timeout))
            .create_timeout(Some(self.connect_timeout))
            .recycle_timeout(Some(self.connect_timeout))
            .build()
            .map_err(|e| StoreError::backend(BACKEND, e))
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read_password(source: &PasswordSource) -> Result<String, StoreError> {
    let missing = |what: String| StoreError::backend(BACKEND, what);
    match source {
        PasswordSource::File(path) => std::fs::read_to_string(path)
            .map(|p| p.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| missing(format!("password_file {}: {e}", path.display()))),
        PasswordSource::Env(var) => {
            std::env::var(var).map_err(|e| missing(format!("password_env {var}: {e}")))
        }
    }
}

/// A client error as a store error: `Unavailable` when nothing was written
/// and the same call may work later (the connection is gone, the server is
/// shutting down or refusing connections, a statement timed out or lost a
/// deadlock), `Backend` otherwise.
pub(super) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    if is_transient(&e) {
        StoreError::Unavailable {
            backend: BACKEND,
            source: Box::new(e),
        }
    } else {
        StoreError::backend(BACKEND, e)
    }
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(state) = e.code() {
        let c = state.code();
        // 08: connection exception; 57P0x: shutdown, crash recovery, cannot
        // connect now; 53300: too many connections; 57014: statement timeout;
        // 40001 / 40P01: serialization failure, deadlock (rolled back).
        return c.starts_with("08")
            || c.starts_with("57P")
            || matches!(c, "53300" | "57014" | "40001" | "40P01");
    }
    // No SQLSTATE: the client's own I/O failed.
    std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>())
}

/// A pool error as a store error: every way of not getting a connection is
/// `Unavailable` (nothing was sent).
pub(super) fn pool_err(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) if !is_transient(&e) && e.code().is_some() => {
            // The server answered and refused (a bad password, no such
            // database): retrying will not help, the operator must act.
            StoreError::backend(BACKEND, e)
        }
        e => StoreError::Unavailable {
            backend: BACKEND,
            source: Box::new(e),
        },
    }
}
