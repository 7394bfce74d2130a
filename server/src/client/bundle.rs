//! `bundle show|set|list|delete`.

use anyhow::{bail, Context};
use ironroot_api::admin as pb;
use ironroot_api::bundle::certificates_to_pem;
use serde_json::json;

use super::{connect, rpc_err};
use crate::cli::{BundleCommand, BundleDeleteMode, BundleFormat, Output};

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
        BundleCommand::Delete { client, id, mode } => {
            let mut c = connect(&client).await?;
            let mode = match mode {
                BundleDeleteMode::Restrict => pb::BundleDeleteMode::Restrict,
                BundleDeleteMode::Delete => pb::BundleDeleteMode::Delete,
                BundleDeleteMode::Dissociate => pb::BundleDeleteMode::Dissociate,
            };
            let r = c
                .delete_federated_bundle(pb::DeleteFederatedBundleRequest {
                    trust_domain: id.clone(),
                    mode: mode.into(),
                })
                .await
                .map_err(|s| rpc_err("bundle delete", s))?
                .into_inner();
            if r.entries_deleted > 0 {
                println!(
                    "{} entries that federated with {id} deleted",
                    r.entries_deleted
                );
            }
            if r.entries_dissociated > 0 {
                println!(
                    "{} entries no longer federate with {id}",
                    r.entries_dissociated
                );
            }
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
