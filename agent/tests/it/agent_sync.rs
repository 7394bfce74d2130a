//! What SyncEntries gives an agent, over the real agent API: the federated bundles its
//! entries federate with and no others, the set following its entries at the next sync.

use std::time::{Duration, Instant};

use ironroot_api::agent::{self as pb, agent_client::AgentClient};
use ironroot_testkit::server::{NodeApiServer, TD};
use tonic::transport::Channel;

use crate::common::{agent, attested, join_token, rt};

/// The trust domains of the federated bundles a full sync carries.
async fn federated(client: &mut AgentClient<Channel>) -> Vec<String> {
    let r = client
        .sync_entries(pb::SyncEntriesRequest { known_revision: 0 })
        .await
        .expect("sync")
        .into_inner();
    let mut tds: Vec<String> = r.federated_jwks.into_keys().collect();
    tds.sort();
    tds
}

/// Syncs until the federated set is `want` (the server's cache follows the store).
async fn until_federated(client: &mut AgentClient<Channel>, want: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = federated(client).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "federated bundles {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn an_agent_gets_only_the_federated_bundles_its_entries_federate_with() {
    let env = NodeApiServer::start("agent_sync_federated", "", &[], "");
    let pem = env.dir.path().join("partner.pem");
    std::fs::write(&pem, env.server.cli_ok(&["bundle", "show"])).unwrap();
    for td in ["partner-a.test", "partner-b.test", "partner-c.test"] {
        env.server.set_federated_bundle_pem(td, &pem);
    }
    let (one, two) = (
        agent(&env, &join_token(&env), "one"),
        agent(&env, &join_token(&env), "two"),
    );
    rt().block_on(async {
        let (svid_one, mut c_one) = attested(&one).await;
        let (svid_two, mut c_two) = attested(&two).await;
        // No entry federates with anything yet: no federated bundle at all.
        assert_eq!(federated(&mut c_one).await, Vec::<String>::new());

        let create = |parent: &str, path: &str, tds: &[&str]| {
            let id = format!("spiffe://{TD}{path}");
            let mut args = vec![
                "entry",
                "create",
                "--spiffe-id",
                &id,
                "--parent-id",
                parent,
                "--selector",
                "unix:uid:1000",
                "--output",
                "json",
            ];
            for td in tds {
                args.extend(["--federates-with", td]);
            }
            let out = env.server.cli_ok(&args);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            v["entries"][0]["id"].as_str().unwrap().to_owned()
        };
        let a = create(&svid_one.spiffe_id, "/one-a", &["partner-a.test"]);
        create(
            &svid_one.spiffe_id,
            "/one-ab",
            &["partner-a.test", "partner-b.test"],
        );
        create(&svid_two.spiffe_id, "/two-c", &["partner-c.test"]);
        until_federated(&mut c_one, &["partner-a.test", "partner-b.test"]).await;
        until_federated(&mut c_two, &["partner-c.test"]).await;

        // An entry that stops federating takes its bundle with it (when no other needs it).
        env.server.cli_ok(&["entry", "delete", "--entry-id", &a]);
        until_federated(&mut c_one, &["partner-a.test", "partner-b.test"]).await;
        env.server.cli_ok(&[
            "bundle",
            "delete",
            "--id",
            "partner-b.test",
            "--mode",
            "dissociate",
        ]);
        until_federated(&mut c_one, &["partner-a.test"]).await;
        until_federated(&mut c_two, &["partner-c.test"]).await;
    });
}
