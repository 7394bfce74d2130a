//! The admin CLI verbs: a gRPC client over the admin unix socket.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use ironroot_api::admin::{self as pb, admin_client::AdminClient};
use ironroot_api::bundle::certificates_to_pem;
use serde_json::json;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::cli::{
    AgentCommand, BundleCommand, BundleFormat, ClientArgs, EntryCommand, EntryFieldArgs,
    JwtCommand, Output, PolicyCommand, TokenCommand, X509Command,
};
use crate::config::{ServerConfig, DEFAULT_ADMIN_SOCKET};

fn socket_path(args: &ClientArgs) -> anyhow::Result<PathBuf> {
    if let Some(p) = &args.socket_path {
        return Ok(p.clone());
    }
    if let Some(c) = &args.config {
        return Ok(ServerConfig::load(c)?.admin.socket_path);
    }
    Ok(PathBuf::from(DEFAULT_ADMIN_SOCKET))
}

/// Connects to the admin socket. Errors say which socket and why.
pub async fn connect(args: &ClientArgs) -> anyhow::Result<AdminClient<Channel>> {
    let path = socket_path(args)?;
    let p = path.clone();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://ironroot.admin")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = p.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot connect to the admin socket {} (is the server running, and are you root?)",
                path.display()
            )
        })?;
    Ok(AdminClient::new(channel).max_decoding_message_size(64 * 1024 * 1024))
}

/// A gRPC status as an operator-readable error.
fn rpc_err(what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what} failed: {} ({:?})", s.message(), s.code())
}

fn selectors(raw: &[String]) -> anyhow::Result<Vec<pb::Selector>> {
    raw.iter()
        .map(|s| match s.split_once(':') {
            Some((t, v)) => Ok(pb::Selector {
                r#type: t.to_string(),
                value: v.to_string(),
            }),
            None => bail!("selector {s:?} must be type:value, e.g. unix:uid:1000"),
        })
        .collect()
}

fn fields(a: &EntryFieldArgs) -> anyhow::Result<pb::EntryFields> {
    Ok(pb::EntryFields {
        spiffe_id: a.spiffe_id.clone(),
        parent_id: a.parent_id.clone(),
        selectors: selectors(&a.selectors)?,
        x509_svid_ttl: a.x509_svid_ttl,
        jwt_svid_ttl: a.jwt_svid_ttl,
        dns_names: a.dns_names.clone(),
        admin: a.admin,
        downstream: a.downstream,
        hint: a.hint.clone(),
        expires_at: a.entry_expiry,
    })
}

/// One entry of an `entry create --data` file, as SPIRE writes them (its
/// legacy field names accepted beside ours).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DataEntry {
    spiffe_id: String,
    parent_id: String,
    selectors: Vec<DataSelector>,
    #[serde(default, alias = "ttl")]
    x509_svid_ttl: i32,
    #[serde(default)]
    jwt_svid_ttl: i32,
    #[serde(default)]
    dns_names: Vec<String>,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    downstream: bool,
    #[serde(default)]
    hint: String,
    #[serde(default, alias = "entryExpiry", alias = "expires_at")]
    entry_expiry: i64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DataSelector {
    r#type: String,
    value: String,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile {
    entries: Vec<DataEntry>,
}

/// Entries per BatchCreateEntry call from `entry create --data`: well under the admin
/// API's default request size limit (`admin.max_request_bytes`, 1 MiB) for ordinary entries.
const DATA_BATCH: usize = 1_000;

/// `entry create --data FILE`: every entry of the file, in batches; prints
/// each one's outcome and fails if any failed.
async fn create_from_file(client: &ClientArgs, path: &std::path::Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file: DataFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not an entries file", path.display()))?;
    let all: Vec<pb::EntryFields> = file
        .entries
        .into_iter()
        .map(|e| pb::EntryFields {
            spiffe_id: e.spiffe_id,
            parent_id: e.parent_id,
            selectors: e
                .selectors
                .into_iter()
                .map(|s| pb::Selector {
                    r#type: s.r#type,
                    value: s.value,
                })
                .collect(),
            x509_svid_ttl: e.x509_svid_ttl,
            jwt_svid_ttl: e.jwt_svid_ttl,
            dns_names: e.dns_names,
            admin: e.admin,
            downstream: e.downstream,
            hint: e.hint,
            expires_at: e.entry_expiry,
        })
        .collect();
    let mut c = connect(client).await?;
    let (mut created, mut failed) = (Vec::new(), Vec::new());
    for (n, chunk) in all.chunks(DATA_BATCH).enumerate() {
        let results = c
            .batch_create_entry(pb::BatchCreateEntryRequest {
                entries: chunk.to_vec(),
            })
            .await
            .map_err(|s| rpc_err("entry create", s))?
            .into_inner()
            .results;
        for (i, r) in results.into_iter().enumerate() {
            let index = n * DATA_BATCH + i;
            match (r.status.unwrap_or_default(), r.entry) {
                (st, Some(e)) if st.code == 0 => created.push(e),
                (st, _) => failed.push((index, st.message)),
            }
        }
    }
    if client.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "created": created.iter().map(entry_json).collect::<Vec<_>>(),
                "failed": failed.iter().map(|(i, m)| json!({"index": i, "error": m})).collect::<Vec<_>>(),
            }))?
        );
    } else {
        println!(
            "Created {} entr{}",
            created.len(),
            if created.len() == 1 { "y" } else { "ies" }
        );
        for (i, m) in &failed {
            println!("entries[{i}]: {m}");
        }
    }
    if !failed.is_empty() {
        bail!("{} of {} entries were not created", failed.len(), all.len());
    }
    Ok(())
}

fn entry_json(e: &pb::Entry) -> serde_json::Value {
    let f = e.fields.clone().unwrap_or_default();
    json!({
        "id": e.id,
        "spiffe_id": f.spiffe_id,
        "parent_id": f.parent_id,
        "selectors": f.selectors.iter().map(|s| format!("{}:{}", s.r#type, s.value)).collect::<Vec<_>>(),
        "x509_svid_ttl": f.x509_svid_ttl,
        "jwt_svid_ttl": f.jwt_svid_ttl,
        "dns_names": f.dns_names,
        "admin": f.admin,
        "downstream": f.downstream,
        "hint": f.hint,
        "expires_at": f.expires_at,
        "revision": e.revision_number,
        "created_at": e.created_at,
    })
}

fn print_entries(out: Output, entries: &[pb::Entry]) -> anyhow::Result<()> {
    if out == Output::Json {
        let v: Vec<_> = entries.iter().map(entry_json).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "entries": v }))?
        );
        return Ok(());
    }
    println!(
        "Found {} entr{}",
        entries.len(),
        if entries.len() == 1 { "y" } else { "ies" }
    );
    for e in entries {
        let f = e.fields.clone().unwrap_or_default();
        println!();
        println!("Entry ID         : {}", e.id);
        println!("SPIFFE ID        : {}", f.spiffe_id);
        println!("Parent ID        : {}", f.parent_id);
        println!("Revision         : {}", e.revision_number);
        println!("X509-SVID TTL    : {}", ttl_text(f.x509_svid_ttl));
        println!("JWT-SVID TTL     : {}", ttl_text(f.jwt_svid_ttl));
        for s in &f.selectors {
            println!("Selector         : {}:{}", s.r#type, s.value);
        }
        for d in &f.dns_names {
            println!("DNS name         : {d}");
        }
        if f.admin {
            println!("Admin            : true");
        }
        if f.downstream {
            println!("Downstream       : true");
        }
        if !f.hint.is_empty() {
            println!("Hint             : {}", f.hint);
        }
        if f.expires_at != 0 {
            println!("Entry expiry     : {}", f.expires_at);
        }
    }
    Ok(())
}

fn ttl_text(t: i32) -> String {
    if t == 0 {
        "default".into()
    } else {
        format!("{t}s")
    }
}

/// `entry create|show|update|delete`: prints the result as text or JSON (`--output`).
/// Fails (with the server's message) when the socket cannot be reached or the server refuses the call. A `--data` file creates every entry it holds and fails if any one failed.
pub async fn entry(cmd: EntryCommand) -> anyhow::Result<()> {
    match cmd {
        EntryCommand::Create {
            client,
            data: Some(path),
            ..
        } => create_from_file(&client, &path).await,
        EntryCommand::Create {
            client,
            data: None,
            fields: Some(f),
        } => {
            let mut c = connect(&client).await?;
            let e = c
                .create_entry(pb::CreateEntryRequest {
                    entry: Some(fields(&f)?),
                })
                .await
                .map_err(|s| rpc_err("entry create", s))?
                .into_inner();
            print_entries(client.output, &[e])
        }
        EntryCommand::Create { .. } => {
            bail!("entry create needs --spiffe-id, --parent-id and --selector, or --data FILE")
        }
        EntryCommand::Show {
            client,
            entry_id,
            spiffe_id,
            parent_id,
            selectors: sel,
        } => {
            let mut c = connect(&client).await?;
            let entries = if let Some(id) = entry_id {
                vec![c
                    .get_entry(pb::GetEntryRequest { id })
                    .await
                    .map_err(|s| rpc_err("entry show", s))?
                    .into_inner()]
            } else {
                let mut all = Vec::new();
                let mut page_token = String::new();
                loop {
                    let page = c
                        .list_entries(pb::ListEntriesRequest {
                            by_spiffe_id: spiffe_id.clone().unwrap_or_default(),
                            by_parent_id: parent_id.clone().unwrap_or_default(),
                            by_selectors: selectors(&sel)?,
                            page_size: 0,
                            page_token,
                        })
                        .await
                        .map_err(|s| rpc_err("entry show", s))?
                        .into_inner();
                    all.extend(page.entries);
                    if page.next_page_token.is_empty() {
                        break all;
                    }
                    page_token = page.next_page_token;
                }
            };
            print_entries(client.output, &entries)
        }
        EntryCommand::Update {
            client,
            entry_id,
            expected_revision,
            fields: f,
        } => {
            let mut c = connect(&client).await?;
            let e = c
                .update_entry(pb::UpdateEntryRequest {
                    id: entry_id,
                    entry: Some(fields(&f)?),
                    expected_revision,
                })
                .await
                .map_err(|s| rpc_err("entry update", s))?
                .into_inner();
            print_entries(client.output, &[e])
        }
        EntryCommand::Delete { client, entry_id } => {
            let mut c = connect(&client).await?;
            let e = c
                .delete_entry(pb::DeleteEntryRequest { id: entry_id })
                .await
                .map_err(|s| rpc_err("entry delete", s))?
                .into_inner();
            if client.output == Output::Json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "deleted": entry_json(&e) }))?
                );
            } else {
                println!("Deleted entry {}", e.id);
            }
            Ok(())
        }
    }
}

/// `bundle show|set|list|delete`: this trust domain's bundle (PEM or JWKS) and the
/// federated ones. Fails (with the server's message) when the socket cannot be reached or the server refuses the call.
pub async fn bundle(cmd: BundleCommand) -> anyhow::Result<()> {
    let (client, format) = match cmd {
        BundleCommand::Show { client, format } => (client, format),
        BundleCommand::Set {
            client,
            id,
            path,
            format,
        } => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let (jwks_json, pem) = match format {
                BundleFormat::Jwks => (text, String::new()),
                BundleFormat::Pem => (String::new(), text),
            };
            let mut c = connect(&client).await?;
            let b = c
                .set_federated_bundle(pb::SetFederatedBundleRequest {
                    trust_domain: id,
                    jwks_json,
                    pem,
                })
                .await
                .map_err(|s| rpc_err("bundle set", s))?
                .into_inner();
            println!("bundle set for {}", b.trust_domain);
            return Ok(());
        }
        BundleCommand::List { client } => {
            let mut c = connect(&client).await?;
            let l = c
                .list_federated_bundles(pb::ListFederatedBundlesRequest {})
                .await
                .map_err(|s| rpc_err("bundle list", s))?
                .into_inner();
            if client.output == Output::Json {
                let v: Vec<_> = l
                    .bundles
                    .iter()
                    .map(|b| json!({"trust_domain": b.trust_domain, "x509_authorities": b.x509_authorities.len(), "jwks": serde_json::from_str::<serde_json::Value>(&b.jwks_json).unwrap_or_default()}))
                    .collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({ "bundles": v }))?
                );
            } else {
                println!("Found {} federated bundle(s)", l.bundles.len());
                for b in &l.bundles {
                    println!(
                        "{} ({} X.509 authorities)",
                        b.trust_domain,
                        b.x509_authorities.len()
                    );
                }
            }
            return Ok(());
        }
        BundleCommand::Delete { client, id } => {
            let mut c = connect(&client).await?;
            let r = c
                .delete_federated_bundle(pb::DeleteFederatedBundleRequest {
                    trust_domain: id.clone(),
                })
                .await
                .map_err(|s| rpc_err("bundle delete", s))?
                .into_inner();
            if !r.deleted {
                bail!("no federated bundle for {id}");
            }
            println!("deleted");
            return Ok(());
        }
    };
    let mut c = connect(&client).await?;
    let b = c
        .get_bundle(pb::GetBundleRequest {})
        .await
        .map_err(|s| rpc_err("bundle show", s))?
        .into_inner();
    match format {
        BundleFormat::Jwks => println!("{}", b.jwks_json),
        BundleFormat::Pem => print!("{}", certificates_to_pem(&b.x509_authorities)),
    }
    Ok(())
}

/// Creates a file readable by its owner only (for private keys).
fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// `x509 mint`: makes a P-256 key here, has the server sign its CSR, and prints the SVID,
/// key and bundle, or writes them (the key mode 0600) into `--write`. Fails (with the server's message) when the socket cannot be reached or the server refuses the call.
pub async fn x509(cmd: X509Command) -> anyhow::Result<()> {
    let X509Command::Mint {
        client,
        spiffe_id,
        ttl,
        dns_names,
        write,
    } = cmd;
    // The key is made here and never sent: the server only sees the CSR.
    let key = rcgen::KeyPair::generate().context("cannot generate a key pair")?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .context("cannot build the CSR")?;
    let mut c = connect(&client).await?;
    let r = c
        .mint_x509_svid(pb::MintX509SvidRequest {
            csr: csr.der().to_vec(),
            spiffe_id: spiffe_id.clone(),
            ttl,
            dns_names,
        })
        .await
        .map_err(|s| rpc_err("x509 mint", s))?
        .into_inner();
    let svid_pem = certificates_to_pem(&r.svid_chain);
    let bundle_pem = certificates_to_pem(&r.root_cas);
    let key_pem = key.serialize_pem();
    if let Some(dir) = &write {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::write(dir.join("svid.pem"), &svid_pem)?;
        write_private(&dir.join("svid.key"), key_pem.as_bytes())?;
        std::fs::write(dir.join("bundle.pem"), &bundle_pem)?;
    }
    match (client.output, &write) {
        (Output::Json, _) => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "spiffe_id": spiffe_id,
                "expires_at": r.expires_at,
                "svid_pem": svid_pem,
                "bundle_pem": bundle_pem,
                "written_to": write.as_ref().map(|d| d.display().to_string()),
            }))?
        ),
        (Output::Text, Some(dir)) => println!(
            "X509-SVID for {spiffe_id} (expires at {}) written to {}",
            r.expires_at,
            dir.display()
        ),
        (Output::Text, None) => {
            println!("X509-SVID:\n{svid_pem}");
            println!("Private key:\n{key_pem}");
            println!("Root CAs:\n{bundle_pem}");
        }
    }
    Ok(())
}

/// `jwt mint`: prints the token (or writes it to `--write`). Fails (with the server's message) when the socket cannot be reached or the server refuses the call.
pub async fn jwt(cmd: JwtCommand) -> anyhow::Result<()> {
    let JwtCommand::Mint {
        client,
        spiffe_id,
        audience,
        ttl,
        write,
    } = cmd;
    let mut c = connect(&client).await?;
    let r = c
        .mint_jwt_svid(pb::MintJwtSvidRequest {
            spiffe_id: spiffe_id.clone(),
            audience,
            ttl,
        })
        .await
        .map_err(|s| rpc_err("jwt mint", s))?
        .into_inner();
    if let Some(f) = &write {
        std::fs::write(f, format!("{}\n", r.token))
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    if client.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "spiffe_id": spiffe_id, "token": r.token, "expires_at": r.expires_at
            }))?
        );
    } else {
        println!("{}", r.token);
    }
    Ok(())
}

/// `healthcheck`: succeeds when the server answers, its CA has active keys and can sign;
/// a degraded server (e.g. failing CA rotation checks) and store records that do not decode
/// are named on stderr without failing it. Fails (with the server's message) when the socket
/// cannot be reached, the server refuses the call, or it reports itself unhealthy (e.g. its
/// HSM is unreachable), naming what is wrong.
pub async fn healthcheck(client: ClientArgs) -> anyhow::Result<()> {
    let mut c = connect(&client).await?;
    let h = c
        .health(pb::HealthRequest {})
        .await
        .map_err(|s| rpc_err("healthcheck", s))?
        .into_inner();
    // Servers older than the field send nothing: they had no other verdict than healthy.
    let state = if h.state.is_empty() {
        "healthy"
    } else {
        h.state.as_str()
    };
    let unhealthy = state == "unhealthy";
    if client.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "healthy": !unhealthy,
                "state": state,
                "problems": h.problems,
                "trust_domain": h.trust_domain,
                "key_manager": h.key_manager,
                "active_x509_authority": h.active_x509_authority,
                "active_x509_authority_expires_at": h.active_x509_authority_expires_at,
                "active_jwt_key_id": h.active_jwt_key_id,
                "entries": h.entries,
                "unreadable_records": h.unreadable_records,
            }))?
        );
    } else {
        println!(
            "Server is {state} (trust domain {}, {})",
            h.trust_domain, h.key_manager
        );
        // Serving, but an operator has work: say so on stderr, keep the exit code.
        if !unhealthy {
            for p in &h.problems {
                eprintln!("warning: {p}");
            }
        }
        for r in &h.unreadable_records {
            eprintln!("warning: {r}; skipped, not served (delete or repair it)");
        }
    }
    if unhealthy {
        anyhow::bail!("server is unhealthy: {}", h.problems.join("; "));
    }
    Ok(())
}

/// `token generate`: prints a new single-use join token. Fails (with the server's message) when the socket cannot be reached or the server refuses the call.
pub async fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Generate { client, ttl } = cmd;
    let mut c = connect(&client).await?;
    let t = c
        .create_join_token(pb::CreateJoinTokenRequest { ttl })
        .await
        .map_err(|s| rpc_err("token generate", s))?
        .into_inner();
    if client.output == Output::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "token": t.token, "expires_at": t.expires_at }))?
        );
    } else {
        println!("Token: {}", t.token);
        println!("Expires at: {}", t.expires_at);
    }
    Ok(())
}

/// `agent list|ban|evict`: attested agents. Fails (with the server's message) when the socket cannot be reached or the server refuses the call.
pub async fn agent(cmd: AgentCommand) -> anyhow::Result<()> {
    let client = match cmd {
        AgentCommand::List { client } => client,
        AgentCommand::Ban { client, spiffe_id } => {
            let mut c = connect(&client).await?;
            c.ban_agent(pb::AgentIdRequest { spiffe_id })
                .await
                .map_err(|s| rpc_err("agent ban", s))?;
            println!("banned");
            return Ok(());
        }
        AgentCommand::Evict { client, spiffe_id } => {
            let mut c = connect(&client).await?;
            c.evict_agent(pb::AgentIdRequest { spiffe_id })
                .await
                .map_err(|s| rpc_err("agent evict", s))?;
            println!("evicted");
            return Ok(());
        }
    };
    let mut c = connect(&client).await?;
    let mut agents = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_agents(pb::ListAgentsRequest {
                page_size: 0,
                page_token,
            })
            .await
            .map_err(|s| rpc_err("agent list", s))?
            .into_inner();
        agents.extend(page.agents);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    if client.output == Output::Json {
        let v: Vec<_> = agents
            .iter()
            .map(|a| {
                json!({
                    "spiffe_id": a.spiffe_id,
                    "attestor": a.attestor,
                    "selectors": a.selectors.iter().map(|s| format!("{}:{}", s.r#type, s.value)).collect::<Vec<_>>(),
                    "serial_number": a.serial_number,
                    "expires_at": a.expires_at,
                    "banned": a.banned,
                    "first_attested_at": a.first_attested_at,
                    "last_attested_at": a.last_attested_at,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json!({ "agents": v }))?);
        return Ok(());
    }
    println!("Found {} attested agent(s)", agents.len());
    for a in &agents {
        println!();
        println!("SPIFFE ID        : {}", a.spiffe_id);
        println!("Attestor         : {}", a.attestor);
        println!("SVID expires at  : {}", a.expires_at);
        println!("Banned           : {}", a.banned);
        for s in &a.selectors {
            println!("Selector         : {}:{}", s.r#type, s.value);
        }
    }
    Ok(())
}

/// `policy generate`: local, no server needed.
pub fn policy(cmd: PolicyCommand) -> anyhow::Result<()> {
    let PolicyCommand::Generate {
        eventlog,
        name,
        output,
        pin,
        no_pin,
    } = cmd
    else {
        anyhow::bail!("`policy check` runs offline, through boot_tools::policy_check");
    };
    let bytes = std::fs::read(&eventlog)
        .with_context(|| format!("cannot read event log {}", eventlog.display()))?;
    let log = ironroot_tpm::verify::eventlog::EventLog::parse(&bytes)
        .with_context(|| format!("{} is not a valid TCG event log", eventlog.display()))?;
    use ironroot_tpm::verify::policy::{
        generate_policy_with, GenerateOptions, DEFAULT_PINNED_PCRS,
    };
    if let Some(bad) = pin.iter().flatten().find(|p| **p > 23) {
        anyhow::bail!("--pin {bad}: a TPM has PCRs 0-23");
    }
    let opts = GenerateOptions {
        pin_pcrs: match (no_pin, pin) {
            (true, _) => Vec::new(),
            (false, Some(list)) => list,
            (false, None) => DEFAULT_PINNED_PCRS.to_vec(),
        },
    };
    let policy = generate_policy_with(&name, &log, &opts);
    // A boot that breaks the profile gets no rule on the PCRs where it does: say so.
    for f in &log.boot_state(policy.bank).findings {
        eprintln!("warning: {f}: the policy reads nothing from PCR{}", f.pcr);
    }
    policy.validate().with_context(|| {
        format!(
            "no usable policy can be generated from {}",
            eventlog.display()
        )
    })?;
    let text = policy.to_toml()?;
    let header = format!(
        "# Measured-boot policy '{name}', generated by `ironroot-server policy generate` from\n# {} ({} events). Review before use.\n",
        eventlog.display(),
        log.events().len()
    );
    match output {
        Some(p) => {
            std::fs::write(&p, format!("{header}{text}"))
                .with_context(|| format!("cannot write {}", p.display()))?;
            eprintln!("policy '{name}' written to {}", p.display());
        }
        None => print!("{header}{text}"),
    }
    Ok(())
}
