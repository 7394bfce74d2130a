//! A private PostgreSQL server per test.
//!
//! ```no_run
//! use ironroot_testkit::postgres::Postgres;
//! let pg = Postgres::start(); // initdb + pg_ctl start, about 2 s
//! pg.create_database("store");
//! let url = pg.url("store"); // "host=/tmp/ironroot-pg.XXXX port=5432 user=ironroot dbname=store"
//! ```
//!
//! Each instance is its own cluster (initdb) in its own temp dir under /tmp, mode 0755 and
//! owned by the `postgres` user when the test runs as root (initdb and postgres refuse to run
//! as root, and must reach their data directory). It listens on a unix socket in that dir
//! only, no TCP: the port only names the socket file, so parallel instances cannot collide
//! and none needs a free port. Trust authentication for the role `ironroot`.
//!
//! One instance per test rather than one per test process: nextest runs every test in a
//! process of its own, so sharing would buy nothing there, and a test may stop and start
//! its server. The instance is stopped (by `pg_ctl stop -m immediate`, its postmaster PID
//! as the fallback) when dropped, also when the test panics, and its log is copied to
//! `target/test-logs/<test>/postgres.log`. `fsync` is off unless [`PostgresOptions::fsync`]
//! says otherwise (a crash-safety test must turn it on).
//!
//! A machine without PostgreSQL's server binaries is a failure naming
//! `scripts/install-deps.sh`, never a skip. `IRONROOT_PG_BIN` overrides where they are
//! looked for (default: the newest `/usr/lib/postgresql/<version>/bin`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tempfile::TempDir;

/// The role tests connect as (the instance's superuser).
pub const USER: &str = "ironroot";
/// The port the socket file is named after (see the module doc: no TCP).
pub const PORT: u16 = 5432;
/// Environment variable naming the directory of `initdb`, `pg_ctl`, `psql`.
pub const BIN_ENV: &str = "IRONROOT_PG_BIN";

/// How the instance runs; the default is a fast, unsafe-on-crash server.
#[derive(Debug, Clone, Default)]
pub struct PostgresOptions {
    /// `fsync` on: only a test of crash safety needs the cost.
    pub fsync: bool,
    /// Also listen on 127.0.0.1 (a free port) with TLS only: a certificate for
    /// `localhost` and 127.0.0.1 from a test CA ([`Postgres::tls_ca`]); TCP
    /// connections without TLS are rejected by `pg_hba.conf`.
    pub tls: bool,
}

/// A running private PostgreSQL; stopped and removed when dropped.
pub struct Postgres {
    dir: TempDir,
    bin: PathBuf,
    options: PostgresOptions,
    log_dir: PathBuf,
    running: bool,
    /// The port: [`PORT`], or a free TCP port with [`PostgresOptions::tls`].
    port: u16,
    /// The CA of the server's certificate, with [`PostgresOptions::tls`].
    tls_ca: Option<crate::certs::CertFiles>,
}

/// The directory of PostgreSQL's server binaries; panics naming the fix when there is none.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(BIN_ENV) {
        return PathBuf::from(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "PostgreSQL's server binaries (initdb, pg_ctl) are not installed: no \
             /usr/lib/postgresql/<version>/bin/initdb and {BIN_ENV} is unset. Install them with \
             scripts/install-deps.sh (Debian package postgresql)"
        ),
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Postgres {
    /// A fresh instance with the default options.
    pub fn start() -> Self {
        Self::start_with(PostgresOptions::default())
    }

    /// A fresh instance: initdb, then started and ready for connections.
    pub fn start_with(options: PostgresOptions) -> Self {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("ironroot-pg.")
            .tempdir_in("/tmp")
            .unwrap_or_else(|e| panic!("cannot create a temp dir for PostgreSQL: {e}"));
        set_mode_0755(dir.path());
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .unwrap_or_else(|| {
                    panic!(
                        "no `postgres` user to run PostgreSQL as (tests run as root): install \
                         the postgresql package with scripts/install-deps.sh"
                    )
                });
            nix::unistd::chown(dir.path(), Some(pg.uid), Some(pg.gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", dir.path().display()));
        }
        let port = if options.tls {
            crate::free_port()
        } else {
            PORT
        };
        let mut pg = Postgres {
            dir,
            bin,
            options,
            log_dir: crate::test_log_dir(&crate::current_test_name()),
            running: false,
            port,
            tls_ca: None,
        };
        let data = pg.data_dir();
        pg.run_as_server_user(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                USER.as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        if pg.options.tls {
            pg.set_up_tls();
        }
        pg.start_again();
        pg
    }

    /// The server's certificate and key (owned by the server user, the key 0600, as
    /// PostgreSQL demands) and a `pg_hba.conf` that takes TCP connections over TLS only.
    fn set_up_tls(&mut self) {
        let dir = self.dir.path().join("tls");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let ca = crate::certs::ca(&dir, "pg-test-ca");
        let server = crate::certs::leaf(&dir, "server", "DNS:localhost,IP:127.0.0.1", &ca);
        let hba = self.data_dir().join("pg_hba.conf");
        std::fs::write(
            &hba,
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap_or_else(|e| panic!("{}: {e}", hba.display()));
        if is_root() {
            let pg = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .expect("postgres user");
            for p in [&dir, &server.cert, &server.key, &hba] {
                nix::unistd::chown(p.as_path(), Some(pg.uid), Some(pg.gid))
                    .unwrap_or_else(|e| panic!("chown {}: {e}", p.display()));
            }
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&server.key, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", server.key.display()));
        self.tls_ca = Some(ca);
    }

    /// The CA (PEM) that issued the server's certificate; panics without
    /// [`PostgresOptions::tls`].
    pub fn tls_ca(&self) -> &Path {
        &self
            .tls_ca
            .as_ref()
            .expect("PostgresOptions::tls was not set")
            .cert
    }

    /// A connection string to database `dbname` over TCP (`localhost`, the
    /// TLS port); panics without [`PostgresOptions::tls`].
    pub fn tcp_url(&self, dbname: &str) -> String {
        assert!(self.options.tls, "PostgresOptions::tls was not set");
        format!(
            "host=localhost port={} user={USER} dbname={dbname}",
            self.port
        )
    }

    /// The directory of the server's unix socket (its `host`).
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// A libpq key/value connection string for database `dbname`.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={USER} dbname={dbname}",
            self.socket_dir().display(),
            self.port
        )
    }

    /// Creates database `name`.
    pub fn create_database(&self, name: &str) {
        self.psql("postgres", &format!("CREATE DATABASE \"{name}\""));
    }

    /// Runs `sql` in database `db` with psql; returns its unaligned output. Panics (with
    /// psql's error) when it fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                db,
                "-c",
                sql,
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run psql: {e}"));
        if !out.status.success() {
            panic!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Stops the server (fast shutdown: connections are closed, as on an operator's
    /// restart). The data stays; [`Postgres::start_again`] starts it again.
    pub fn stop(&mut self) {
        self.pg_ctl_stop("fast");
    }

    /// Crashes the server (`pg_ctl stop -m immediate`: every process quits at once, no
    /// checkpoint; the next start replays the WAL, as after a power cut when `fsync` is on).
    /// [`Postgres::start_again`] starts it again.
    pub fn crash(&mut self) {
        self.pg_ctl_stop("immediate");
    }

    /// Starts the stopped server again on the same data, socket and port; returns once it
    /// accepts connections.
    pub fn start_again(&mut self) {
        let data = self.data_dir();
        let log = self.log_file();
        let mut opts = format!(
            "-p {} -k {} -c listen_addresses=''",
            self.port,
            self.socket_dir().display()
        );
        if let Some(ca) = &self.tls_ca {
            let dir = ca.cert.parent().expect("tls dir");
            opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} \
                 -c ssl_key_file={}",
                self.port,
                self.socket_dir().display(),
                dir.join("server.pem").display(),
                dir.join("server.key").display()
            );
        }
        if !self.options.fsync {
            opts.push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
        }
        // Many instances may run at once: keep each small.
        opts.push_str(" -c shared_buffers=16MB -c max_connections=60");
        self.run_as_server_user(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
        self.running = true;
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn pg_ctl_stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data_dir();
        let out = self.server_user_command(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            // pg_ctl could not: the postmaster's PID is the first line of its pid file.
            let pid = std::fs::read_to_string(data.join("postmaster.pid"))
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<i32>().ok()));
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGQUIT,
                );
            }
        }
        self.running = false;
    }

    fn server_user_command(
        &self,
        tool: &str,
        args: &[&std::ffi::OsStr],
    ) -> std::io::Result<Output> {
        let exe = self.bin.join(tool);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // The server user's cwd must be readable by it: not root's home.
        cmd.args(args).current_dir(self.dir.path()).output()
    }

    fn run_as_server_user(&self, tool: &str, args: &[&std::ffi::OsStr]) {
        let out = self.server_user_command(tool, args).unwrap_or_else(|e| {
            panic!("cannot run {tool}: {e} (scripts/install-deps.sh installs it)")
        });
        if !out.status.success() {
            panic!(
                "{tool} failed ({}):\n{}{}\nserver log:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                crate::tail(&self.log_file(), 30)
            );
        }
    }
}

fn set_mode_0755(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", p.display()));
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Immediate: the data is thrown away with the temp dir.
        self.pg_ctl_stop("immediate");
        let _ = std::fs::copy(self.log_file(), self.log_dir.join("postgres.log"));
    }
}
