//! Command line of `ironroot-server` (verbs mirror SPIRE's).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The parsed command line.
#[derive(Parser, Debug)]
#[command(
    name = "ironroot-server",
    version,
    about = "ironroot server: HSM-backed SPIFFE CA, registration store and admin API"
)]
pub struct Cli {
    /// The verb to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs: `run` serves; the others are offline tools or admin API clients.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Run {
        /// Configuration file (TOML).
        #[arg(short, long, default_value = "/etc/ironroot/server.toml")]
        config: PathBuf,
    },
    /// Manage registration entries.
    #[command(subcommand)]
    Entry(EntryCommand),
    /// Show the trust bundle.
    #[command(subcommand)]
    Bundle(BundleCommand),
    /// Mint X.509-SVIDs.
    #[command(subcommand)]
    X509(X509Command),
    /// Mint JWT-SVIDs.
    #[command(subcommand)]
    Jwt(JwtCommand),
    /// Join tokens for the join_token node attestor.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Attested agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Measured-boot policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Firmware event logs (offline, no server needed).
    #[command(subcommand)]
    Eventlog(EventlogCommand),
    /// The tamper-evident audit log (offline, no server needed).
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Check that the server answers and its CA is ready.
    Healthcheck {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// `audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check a log's hash chain and checkpoint signatures; name the first broken link.
    /// Exit 0: intact; 1: broken; 2: cannot be checked (unreadable, no files, bad key).
    Verify(AuditVerifyArgs),
    /// Print the checkpoint key's public key (PEM) from the key manager, to pin with
    /// `audit verify --public-key` on another machine.
    PublicKey {
        /// Server configuration (its key manager and `[audit]`).
        #[arg(short, long)]
        config: PathBuf,
    },
}

/// `audit verify` options.
#[derive(Args, Debug)]
pub struct AuditVerifyArgs {
    /// The log's directory (default: the config's `[audit] dir`, else `data_dir/audit`).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Server configuration: where the log is, and (without --public-key) the key
    /// manager to read the checkpoint key from.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// The checkpoint key's public key (PEM or DER SubjectPublicKeyInfo) from a trusted
    /// copy. Without it (and without --config) the key the log carries is used, which
    /// proves consistency but not origin.
    #[arg(long)]
    pub public_key: Option<PathBuf>,
    /// The head recorded elsewhere, as "SEQ:HASH" (instead of the directory's audit.head).
    #[arg(long)]
    pub head: Option<String>,
    /// Accept a log whose first file starts after record 0 (older files archived).
    #[arg(long)]
    pub allow_pruned_start: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How a command prints its result.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// How a client command reaches the server.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Admin socket path (default: the config's admin.socket_path, else /run/ironroot/server/admin.sock).
    #[arg(short = 's', long, env = "IRONROOT_ADMIN_SOCKET")]
    pub socket_path: Option<PathBuf>,
    /// Server configuration to read the socket path from.
    #[arg(short, long)]
    pub config: Option<PathBuf>,
    /// The admin API over mTLS instead of the socket.
    #[command(flatten)]
    pub tls: AdminTlsArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// How a client command reaches the admin API over mTLS (all four, or none).
#[derive(Args, Debug, Clone, Default)]
pub struct AdminTlsArgs {
    /// Call the admin API over mTLS at this address (the server's Node API port, host:port)
    /// instead of the socket, presenting an admin X.509-SVID (`--svid-cert`, `--svid-key`)
    /// and trusting `--bundle`.
    #[arg(long, requires_all = ["svid_cert", "svid_key", "bundle"])]
    pub tls_address: Option<String>,
    /// With `--tls-address`: the admin X.509-SVID, PEM (leaf first, then its chain).
    #[arg(long, requires = "tls_address")]
    pub svid_cert: Option<PathBuf>,
    /// With `--tls-address`: the SVID's private key, PEM (PKCS#8 or SEC1).
    #[arg(long, requires = "tls_address")]
    pub svid_key: Option<PathBuf>,
    /// With `--tls-address`: the trust domain's bundle, PEM; the server must present
    /// `spiffe://<the SVID's trust domain>/spire/server` under it.
    #[arg(long, requires = "tls_address")]
    pub bundle: Option<PathBuf>,
}

/// The operator-settable fields of an entry.
#[derive(Args, Debug, Clone)]
pub struct EntryFieldArgs {
    /// SPIFFE ID the entry's workloads get.
    #[arg(long)]
    pub(crate) spiffe_id: String,
    /// SPIFFE ID of the agent (or node alias) allowed to serve it.
    #[arg(long)]
    pub(crate) parent_id: String,
    /// Selector `type:value`; repeat for several (all must match).
    #[arg(long = "selector", required = true)]
    pub(crate) selectors: Vec<String>,
    /// X.509-SVID TTL in seconds (0: server default).
    #[arg(long, default_value_t = 0)]
    pub(crate) x509_svid_ttl: i32,
    /// JWT-SVID TTL in seconds (0: server default).
    #[arg(long, default_value_t = 0)]
    pub(crate) jwt_svid_ttl: i32,
    /// DNS SAN for the X.509-SVID; repeatable.
    #[arg(long = "dns-name")]
    pub(crate) dns_names: Vec<String>,
    /// Mark the SVID as allowed to use the admin API.
    #[arg(long)]
    pub(crate) admin: bool,
    /// Mark the SVID as allowed to sign downstream CAs.
    #[arg(long)]
    pub(crate) downstream: bool,
    /// Free text handed to the workload to tell its SVIDs apart.
    #[arg(long, default_value = "")]
    pub(crate) hint: String,
    /// Unix time after which the entry is no longer served (0: never).
    #[arg(long, default_value_t = 0)]
    pub(crate) entry_expiry: i64,
    /// Trust domain (`other.org` or `spiffe://other.org`) whose federated bundle the
    /// entry's workloads receive; repeatable (SPIRE's `-federatesWith`). The server must
    /// hold that trust domain's bundle. On `entry update`, the list replaces the old one.
    #[arg(long = "federates-with")]
    pub(crate) federates_with: Vec<String>,
}

/// `entry`: registration entries.
#[derive(Subcommand, Debug)]
pub enum EntryCommand {
    /// Create an entry, or many from a file (`--data`, SPIRE's format).
    Create {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// JSON file `{"entries": [{"spiffe_id": …, "parent_id": …,
        /// "selectors": [{"type": "unix", "value": "uid:1000"}], …}]}`; the
        /// entries are created in batches, each with its own result.
        #[arg(long, conflicts_with_all = ["spiffe_id", "parent_id", "selectors"])]
        data: Option<PathBuf>,
        /// The entry, when not from `--data`.
        #[command(flatten)]
        fields: Option<EntryFieldArgs>,
    },
    /// Show entries (all, one by id, or filtered).
    Show {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// Only the entry with this id.
        #[arg(long)]
        entry_id: Option<String>,
        /// Only entries with this SPIFFE ID.
        #[arg(long)]
        spiffe_id: Option<String>,
        /// Only entries with this parent ID.
        #[arg(long)]
        parent_id: Option<String>,
        /// Entries whose selectors include this one; repeatable.
        #[arg(long = "selector")]
        selectors: Vec<String>,
        /// Entries that federate with this trust domain; repeatable (SPIRE's
        /// -federatesWith).
        #[arg(long = "federates-with")]
        federates_with: Vec<String>,
        /// How an entry's federated trust domains must relate to --federates-with.
        #[arg(long, value_enum, default_value_t = FederatesWithMatchArg::Superset)]
        match_federates_with_on: FederatesWithMatchArg,
    },
    /// Replace every field of an entry.
    Update {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// The entry to update.
        #[arg(long)]
        entry_id: String,
        /// Refuse the update unless the stored revision is this one.
        #[arg(long, default_value_t = 0)]
        expected_revision: i64,
        /// Its new fields.
        #[command(flatten)]
        fields: EntryFieldArgs,
    },
    /// Delete an entry.
    Delete {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// The entry to delete.
        #[arg(long)]
        entry_id: String,
    },
}

/// How a bundle is written.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum BundleFormat {
    /// X.509 root certificates in PEM.
    Pem,
    /// A SPIFFE bundle (JWKS): X.509 roots and JWT keys.
    Jwks,
}

/// `bundle`: trust bundles.
#[derive(Subcommand, Debug)]
pub enum BundleCommand {
    /// Print this trust domain's bundle.
    Show {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// Bundle format.
        #[arg(long, value_enum, default_value_t = BundleFormat::Pem)]
        format: BundleFormat,
    },
    /// Set (create or replace) a federated trust domain's bundle.
    Set {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// The federated trust domain, e.g. spiffe://other.org.
        #[arg(long)]
        id: String,
        /// File holding the bundle.
        #[arg(long)]
        path: std::path::PathBuf,
        /// Format of the file: a SPIFFE bundle (jwks) or PEM root certificates.
        #[arg(long, value_enum, default_value_t = BundleFormat::Jwks)]
        format: BundleFormat,
    },
    /// List federated bundles.
    List {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a federated bundle.
    Delete {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// The federated trust domain, e.g. spiffe://other.org.
        #[arg(long)]
        id: String,
        /// What becomes of entries that federate with it: `restrict` refuses while there
        /// are any, `delete` deletes them, `dissociate` removes the trust domain from them.
        #[arg(long, value_enum, default_value_t = BundleDeleteMode::Restrict)]
        mode: BundleDeleteMode,
    },
}

/// `entry show --match-federates-with-on`: SPIRE's -matchFederatesWithOn.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FederatesWithMatchArg {
    /// It federates with every one given, and maybe others.
    Superset,
    /// It federates with exactly those given.
    Exact,
    /// It federates with at least one of those given.
    Any,
    /// It federates with some of those given and no other.
    Subset,
}

/// `bundle delete --mode`: SPIRE's modes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleDeleteMode {
    /// Refuse while any entry federates with the trust domain.
    Restrict,
    /// Delete the entries that federate with it.
    Delete,
    /// Remove the trust domain from those entries' federates_with.
    Dissociate,
}

/// `x509`: X.509-SVIDs.
#[derive(Subcommand, Debug)]
pub enum X509Command {
    /// Mint an X.509-SVID (a new P-256 key is made here; only its CSR is sent).
    Mint {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// SPIFFE ID of the SVID.
        #[arg(long)]
        spiffe_id: String,
        /// TTL in seconds (0: server default).
        #[arg(long, default_value_t = 0)]
        ttl: i32,
        /// DNS SAN; repeatable.
        #[arg(long = "dns-name")]
        dns_names: Vec<String>,
        /// Write svid.pem (leaf then chain), svid.key and bundle.pem into this directory.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

/// `jwt`: JWT-SVIDs.
#[derive(Subcommand, Debug)]
pub enum JwtCommand {
    /// Mint a JWT-SVID.
    Mint {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// SPIFFE ID of the SVID (the `sub` claim).
        #[arg(long)]
        spiffe_id: String,
        /// Audience; repeatable, at least one.
        #[arg(long = "audience", required = true)]
        audience: Vec<String>,
        /// TTL in seconds (0: server default).
        #[arg(long, default_value_t = 0)]
        ttl: i32,
        /// Write the token to this file.
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

/// `token`: join tokens.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a single-use join token.
    Generate {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// Seconds the token stays valid.
        #[arg(long, default_value_t = 600)]
        ttl: i32,
    },
}

/// `agent`: attested agents.
#[derive(Subcommand, Debug)]
pub enum AgentCommand {
    /// List attested agents.
    List {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ban an agent: it (and any node with its TPM) may not attest again until evicted.
    Ban {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// SPIFFE ID of the agent.
        #[arg(long)]
        spiffe_id: String,
    },
    /// Forget an agent (and its ban); it must attest again.
    Evict {
        /// How to reach the server.
        #[command(flatten)]
        client: ClientArgs,
        /// SPIFFE ID of the agent.
        #[arg(long)]
        spiffe_id: String,
    },
}

/// `policy`: measured-boot policies (offline).
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Write a measured-boot policy from the event log of a known-good boot.
    Generate {
        /// The TCG event log (binary_bios_measurements) of the known-good boot.
        #[arg(long)]
        eventlog: PathBuf,
        /// Policy name (what nodes are bound to, and the tpm:boot_policy selector).
        #[arg(long, default_value = "default")]
        name: String,
        /// Write the policy here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
        /// PCRs whose exact values the policy pins (comma-separated). Default: 4, 7, 8, 9
        /// (those the log extends; see docs/attestation.md for the trade-off).
        #[arg(long, value_delimiter = ',', conflicts_with = "no_pin")]
        pin: Option<Vec<u32>>,
        /// Pin no PCR value: the allow-lists alone decide (they rest on the log's
        /// classification; see docs/attestation.md).
        #[arg(long)]
        no_pin: bool,
    },
    /// Evaluate a policy against an event log offline; exit status 0 when it passes, 1 when
    /// it fails, 2 when the policy or the log is unusable.
    Check(PolicyCheckArgs),
}

/// `policy check`: offline evaluation of a policy file against an event log file.
#[derive(Args, Debug, Clone)]
pub struct PolicyCheckArgs {
    /// The policy (TOML).
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// The TCG event log (binary_bios_measurements).
    #[arg(long)]
    pub(crate) eventlog: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub(crate) output: Output,
}

/// `eventlog`: firmware event logs (offline).
#[derive(Subcommand, Debug)]
pub enum EventlogCommand {
    /// Print every event (PCR, type, digests, decoded data, digest check) and the replayed
    /// PCR values; exit status 2 when the log does not parse.
    Show {
        /// The TCG event log (binary_bios_measurements).
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}
