//! The admin CLI verbs: a gRPC client over the admin unix socket (or over mTLS with an
//! admin SVID, `tls`), one file per verb group. Text output is for people (times as RFC 3339 and relative); JSON
//! output (`--output json`) is for scripts and keeps Unix seconds.

mod agent;
mod bundle;
mod entry;
mod health;
mod mint;
mod policy;
mod tls;

use std::path::PathBuf;

use anyhow::{bail, Context};
use hyper_util::rt::TokioIo;
use ironroot_api::admin::{self as pb, admin_client::AdminClient};
use tonic::transport::{Channel, Endpoint, Uri};

pub use agent::agent;
pub use bundle::bundle;
pub use entry::{batch_create_entries, entry, BATCHES_IN_FLIGHT, DATA_BATCH};
pub use health::healthcheck;
pub use mint::{jwt, token, x509};
pub use policy::policy;

use crate::cli::ClientArgs;
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

/// Connects to the admin socket, or over mTLS with `--tls-address`. Errors say which
/// socket or address and why.
pub async fn connect(args: &ClientArgs) -> anyhow::Result<AdminClient<Channel>> {
    if let Some(address) = &args.tls.tls_address {
        let channel = tls::connect(&args.tls, address).await?;
        return Ok(AdminClient::new(channel).max_decoding_message_size(64 * 1024 * 1024));
    }
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
