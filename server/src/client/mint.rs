//! `x509 mint`, `jwt mint` and `token generate`: credentials the server issues on an operator's word.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;
use ironroot_api::admin as pb;
use ironroot_api::bundle::certificates_to_pem;
use ironroot_runtime::human;
use serde_json::json;

use super::{connect, rpc_err};
use crate::cli::{JwtCommand, Output, TokenCommand, X509Command};

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
            "X509-SVID for {spiffe_id} (expires {}) written to {}",
            human::instant_from_now(r.expires_at),
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
        println!("Expires at: {}", human::instant_from_now(t.expires_at));
    }
    Ok(())
}
