//! `entry create|show|update|delete`, and `entry create --data FILE` (SPIRE's entries file).

use std::collections::VecDeque;
use std::path::Path;

use anyhow::{bail, Context};
use ironroot_api::admin::{self as pb, admin_client::AdminClient};
use ironroot_api::entry::EntrySpec;
use ironroot_runtime::human;
use serde_json::json;
use tonic::transport::Channel;

use super::{connect, rpc_err, selectors};
use crate::cli::{ClientArgs, EntryCommand, EntryFieldArgs, FederatesWithMatchArg, Output};

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
        federates_with: a.federates_with.clone(),
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
    #[serde(default, alias = "federatesWith")]
    federates_with: Vec<String>,
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
pub const DATA_BATCH: usize = 1_000;

/// BatchCreateEntry calls `entry create --data` keeps in flight. One call at a time
/// leaves the server idle while the answer travels back and the next request is
/// decoded and checked; with a few in flight the server decodes and checks one batch
/// while the store writes another (the store still writes one batch at a time, and
/// the audit log's group commit flushes several batches' records together).
pub const BATCHES_IN_FLIGHT: usize = 3;

/// Creates `entries` through BatchCreateEntry, [`DATA_BATCH`] per call and
/// `in_flight` calls at a time (at least one; the CLI uses [`BATCHES_IN_FLIGHT`]), and
/// returns one result per entry, in the order given.
///
/// With several calls in flight the server may write a later batch first, so two
/// entries of `entries` with the same SPIFFE ID, parent ID and selectors are settled
/// here, not by whichever batch lands first: the first one is sent, every later one is
/// answered ALREADY_EXISTS naming the first, as sending one call at a time would
/// have it.
///
/// A call that fails as a whole (transport, authorization, a refused request) ends it
/// with that status; the batches answered before it stay created, and those still in
/// flight may be created too (`entry show` says which).
pub async fn batch_create_entries(
    client: &AdminClient<Channel>,
    entries: Vec<pb::EntryFields>,
    in_flight: usize,
) -> Result<Vec<pb::batch_create_entry_response::Result>, tonic::Status> {
    let total = entries.len();
    let (to_send, settled) = first_of_each_identity(entries);
    let most = in_flight.max(1);
    let mut answered = Vec::with_capacity(to_send.len());
    let mut calls = VecDeque::with_capacity(most);
    let mut to_send = to_send.into_iter().peekable();
    while to_send.peek().is_some() || !calls.is_empty() {
        if calls.len() < most && to_send.peek().is_some() {
            let batch: Vec<_> = to_send.by_ref().take(DATA_BATCH).collect();
            let mut c = client.clone();
            calls.push_back(tokio::spawn(async move {
                c.batch_create_entry(pb::BatchCreateEntryRequest { entries: batch })
                    .await
            }));
            continue;
        }
        let Some(call) = calls.pop_front() else {
            break;
        };
        let answer = call
            .await
            .map_err(|e| tonic::Status::internal(format!("batch create call stopped: {e}")))??;
        answered.extend(answer.into_inner().results);
    }
    // Merge: the answers in the order sent, the duplicates settled here at their places.
    let mut answered = answered.into_iter();
    let mut settled = settled.into_iter().peekable();
    let mut results = Vec::with_capacity(total);
    for index in 0..total {
        let result = match settled.next_if(|(i, _)| *i == index) {
            Some((_, here)) => here,
            None => answered.next().ok_or_else(|| {
                tonic::Status::internal("the server answered fewer entries than were sent")
            })?,
        };
        results.push(result);
    }
    Ok(results)
}

/// Splits `entries` into those to send and the later ones with the identity (SPIFFE ID,
/// parent ID, sorted selectors) of an earlier one, answered here, with their indexes.
/// An entry that does not parse is sent: the server names what is wrong with it.
fn first_of_each_identity(
    entries: Vec<pb::EntryFields>,
) -> (
    Vec<pb::EntryFields>,
    Vec<(usize, pb::batch_create_entry_response::Result)>,
) {
    let mut first_at = std::collections::HashMap::new();
    let (mut send, mut settled) = (Vec::with_capacity(entries.len()), Vec::new());
    for (index, fields) in entries.into_iter().enumerate() {
        let identity = EntrySpec::try_from(fields.clone()).ok().map(|spec| {
            (
                spec.spiffe_id.to_string(),
                spec.parent_id.to_string(),
                spec.selectors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
            )
        });
        match identity.map(|id| first_at.entry(id)) {
            Some(std::collections::hash_map::Entry::Occupied(first)) => settled.push((
                index,
                pb::batch_create_entry_response::Result {
                    status: Some(pb::ItemStatus {
                        code: tonic::Code::AlreadyExists as i32,
                        message: format!(
                            "entries[{}] of this file has the same spiffe_id, parent_id and \
                             selectors (the first one is the one created)",
                            first.get()
                        ),
                    }),
                    entry: None,
                },
            )),
            Some(std::collections::hash_map::Entry::Vacant(slot)) => {
                slot.insert(index);
                send.push(fields);
            }
            None => send.push(fields),
        }
    }
    (send, settled)
}

/// `entry create --data FILE`: every entry of the file, in batches; prints
/// each one's outcome and fails if any failed.
async fn create_from_file(client: &ClientArgs, path: &Path) -> anyhow::Result<()> {
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
            federates_with: e.federates_with,
        })
        .collect();
    let total = all.len();
    let c = connect(client).await?;
    let results = batch_create_entries(&c, all, BATCHES_IN_FLIGHT)
        .await
        .map_err(|s| rpc_err("entry create", s))?;
    let (mut created, mut failed) = (Vec::new(), Vec::new());
    for (index, r) in results.into_iter().enumerate() {
        match (r.status.unwrap_or_default(), r.entry) {
            (st, Some(e)) if st.code == 0 => created.push(e),
            (st, _) => failed.push((index, st.message)),
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
        bail!("{} of {total} entries were not created", failed.len());
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
        "federates_with": f.federates_with,
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
        for td in &f.federates_with {
            println!("Federates with   : {td}");
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
            println!(
                "Entry expiry     : {}",
                human::instant_from_now(f.expires_at)
            );
        }
        if e.created_at != 0 {
            println!(
                "Created at       : {}",
                human::instant_from_now(e.created_at)
            );
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
            federates_with,
            match_federates_with_on,
        } => {
            let match_on = match match_federates_with_on {
                FederatesWithMatchArg::Superset => pb::FederatesWithMatch::Superset,
                FederatesWithMatchArg::Exact => pb::FederatesWithMatch::Exact,
                FederatesWithMatchArg::Any => pb::FederatesWithMatch::Any,
                FederatesWithMatchArg::Subset => pb::FederatesWithMatch::Subset,
            };
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
                            by_federates_with: federates_with.clone(),
                            match_federates_with_on: match_on.into(),
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
