//! `healthcheck`.

use ironroot_api::admin as pb;
use ironroot_runtime::human;
use serde_json::json;

use super::{connect, rpc_err};
use crate::cli::{ClientArgs, Output};

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
        if !h.active_x509_authority.is_empty() {
            println!(
                "X.509 authority  : {} (expires {})",
                h.active_x509_authority,
                human::instant_from_now(h.active_x509_authority_expires_at)
            );
        }
        if !h.active_jwt_key_id.is_empty() {
            println!("JWT key          : {}", h.active_jwt_key_id);
        }
        println!("Entries          : {}", h.entries);
        // Each problem on its own line: unhealthy ones as errors (the exit code says so
        // too), a serving server's as warnings (an operator has work, the exit code stays 0).
        let level = if unhealthy { "error" } else { "warning" };
        for p in &h.problems {
            eprintln!("{level}: {p}");
        }
        for r in &h.unreadable_records {
            eprintln!("warning: {r}; skipped, not served (delete or repair it)");
        }
    }
    if unhealthy {
        match client.output {
            // Each problem is already on its own line above.
            Output::Text => anyhow::bail!(
                "server is unhealthy ({} problem{} above)",
                h.problems.len(),
                if h.problems.len() == 1 { "" } else { "s" }
            ),
            Output::Json => anyhow::bail!("server is unhealthy: {}", h.problems.join("; ")),
        }
    }
    Ok(())
}
