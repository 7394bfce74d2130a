//! `agent list|ban|evict`.

use ironroot_api::admin as pb;
use ironroot_runtime::human;
use serde_json::json;

use super::{connect, rpc_err};
use crate::cli::{AgentCommand, Output};

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
        println!(
            "SVID expires at  : {}",
            human::instant_from_now(a.expires_at)
        );
        println!(
            "First attested   : {}",
            human::instant_from_now(a.first_attested_at)
        );
        println!(
            "Last attested    : {}",
            human::instant_from_now(a.last_attested_at)
        );
        println!("Banned           : {}", a.banned);
        for s in &a.selectors {
            println!("Selector         : {}:{}", s.r#type, s.value);
        }
    }
    Ok(())
}
