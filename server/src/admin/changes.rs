//! The bodies of the admin calls that change state or issue credentials. The
//! trait impl in `mod.rs` wraps each one: refused up front while the audit log
//! cannot be written, and recorded in it before the caller is answered.

use ironroot_api::admin as pb;
use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::EntrySpec;
use tonic::{Request, Response, Status};
use tracing::info;

use super::{
    agent_pb, blocking, bundle_pb, entry_spec, item_status, parse_id, parse_td, pem_certificates,
    ttl_field, AdminService,
};
use crate::status;
use crate::store::MAX_BATCH;

impl AdminService {
    pub(super) async fn handle_create_entry(
        &self,
        req: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let spec = entry_spec(req.into_inner().entry)?;
        self.require_federated_bundles(&spec).await?;
        let e = self.store.create_entry(spec).await.map_err(status::store)?;
        info!(entry = %e.id, spiffe_id = %e.spec.spiffe_id, "entry created");
        Ok(Response::new(e.into()))
    }

    pub(super) async fn handle_update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = req.into_inner();
        let spec = entry_spec(r.entry)?;
        self.require_federated_bundles(&spec).await?;
        let expected = (r.expected_revision != 0).then_some(r.expected_revision);
        let e = self
            .store
            .update_entry(&r.id, spec, expected)
            .await
            .map_err(status::store)?;
        info!(entry = %e.id, revision = e.revision, "entry updated");
        Ok(Response::new(e.into()))
    }

    pub(super) async fn handle_delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let id = req.into_inner().id;
        let e = self.store.delete_entry(&id).await.map_err(status::store)?;
        info!(entry = %e.id, "entry deleted");
        Ok(Response::new(e.into()))
    }

    pub(super) async fn handle_batch_create_entry(
        &self,
        req: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        let fields = req.into_inner().entries;
        if fields.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} entries in one batch; the limit is {MAX_BATCH}",
                fields.len()
            )));
        }
        // Wire-level rule failures are per item, like the store's: the specs
        // that parse (and federate only with stored bundles) go to the store
        // (moved, not copied), the others keep their place as errors.
        let candidates: Vec<Result<EntrySpec, Status>> =
            fields.into_iter().map(|f| entry_spec(Some(f))).collect();
        let federating = candidates
            .iter()
            .any(|c| c.as_ref().is_ok_and(|s| !s.federates_with.is_empty()));
        let stored_bundles = match federating {
            true => self.stored_bundle_domains().await?,
            false => Default::default(),
        };
        let mut specs: Vec<EntrySpec> = Vec::with_capacity(candidates.len());
        let parsed: Vec<Result<(), Status>> = candidates
            .into_iter()
            .map(|c| {
                c.and_then(|spec| {
                    self.check_federates_with(&spec, &stored_bundles)?;
                    specs.push(spec);
                    Ok(())
                })
            })
            .collect();
        let mut stored = self
            .store
            .create_entries(specs)
            .await
            .map_err(status::store)?
            .into_iter();
        let mut results = Vec::with_capacity(parsed.len());
        let mut created = 0usize;
        for p in parsed {
            let r = match p {
                Err(s) => Err(s),
                Ok(_) => match stored.next() {
                    Some(r) => r.map_err(status::store),
                    None => Err(Status::internal(
                        "the store returned fewer results than items",
                    )),
                },
            };
            results.push(match r {
                Ok(e) => {
                    created += 1;
                    pb::batch_create_entry_response::Result {
                        status: Some(item_status(Ok(()))),
                        entry: Some(e.into()),
                    }
                }
                Err(s) => pb::batch_create_entry_response::Result {
                    status: Some(item_status(Err(s))),
                    entry: None,
                },
            });
        }
        info!(
            created,
            failed = results.len() - created,
            "entry batch created"
        );
        Ok(Response::new(pb::BatchCreateEntryResponse { results }))
    }

    pub(super) async fn handle_batch_delete_entry(
        &self,
        req: Request<pb::BatchDeleteEntryRequest>,
    ) -> Result<Response<pb::BatchDeleteEntryResponse>, Status> {
        let ids = req.into_inner().ids;
        if ids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} ids in one batch; the limit is {MAX_BATCH}",
                ids.len()
            )));
        }
        let outcomes = self
            .store
            .delete_entries(ids.clone())
            .await
            .map_err(status::store)?;
        let mut deleted = 0usize;
        let results: Vec<_> = ids
            .into_iter()
            .zip(outcomes)
            .map(|(id, r)| {
                deleted += usize::from(r.is_ok());
                pb::batch_delete_entry_response::Result {
                    status: Some(item_status(r.map(|_| ()).map_err(status::store))),
                    id,
                }
            })
            .collect();
        info!(
            deleted,
            failed = results.len() - deleted,
            "entry batch deleted"
        );
        Ok(Response::new(pb::BatchDeleteEntryResponse { results }))
    }

    pub(super) async fn handle_mint_x509_svid(
        &self,
        req: Request<pb::MintX509SvidRequest>,
    ) -> Result<Response<pb::MintX509SvidResponse>, Status> {
        let r = req.into_inner();
        let id = parse_id("spiffe_id", &r.spiffe_id)?;
        let ttl = ttl_field("ttl", r.ttl)?;
        let ca = self.ca.clone();
        let dns = r.dns_names;
        let log_id = id.to_string();
        let svid = blocking(move || {
            ca.sign_x509_svid_csr(&r.csr, &id, ttl, &dns)
                .map_err(status::ca)
        })
        .await?;
        let roots = self.ca.bundle().map_err(status::ca)?.x509_authorities;
        info!(spiffe_id = %log_id, expires_at = svid.expires_at, "X.509-SVID minted by admin");
        Ok(Response::new(pb::MintX509SvidResponse {
            svid_chain: svid.chain,
            expires_at: svid.expires_at,
            root_cas: roots,
        }))
    }

    pub(super) async fn handle_mint_jwt_svid(
        &self,
        req: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        let r = req.into_inner();
        let id = parse_id("spiffe_id", &r.spiffe_id)?;
        let ttl = ttl_field("ttl", r.ttl)?;
        let ca = self.ca.clone();
        let log_id = id.to_string();
        let (token, expires_at) =
            blocking(move || ca.mint_jwt_svid(&id, &r.audience, ttl).map_err(status::ca)).await?;
        info!(spiffe_id = %log_id, expires_at, "JWT-SVID minted by admin");
        Ok(Response::new(pb::MintJwtSvidResponse { token, expires_at }))
    }

    pub(super) async fn handle_create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let ttl = match req.into_inner().ttl {
            0 => 600,
            t if t < 0 => return Err(Status::invalid_argument("ttl must not be negative")),
            t => i64::from(t),
        };
        let (token, expires_at) = crate::node::join_token::create(self.store.as_ref(), ttl)
            .await
            .map_err(status::store)?;
        info!(expires_at, "join token created");
        Ok(Response::new(pb::JoinToken { token, expires_at }))
    }

    pub(super) async fn handle_ban_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = parse_id("spiffe_id", &req.into_inner().spiffe_id)?;
        let n = self
            .store
            .set_node_banned(&id, true)
            .await
            .map_err(status::store)?;
        tracing::warn!(agent = %n.spiffe_id, "agent banned");
        Ok(Response::new(agent_pb(n)))
    }

    pub(super) async fn handle_evict_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = parse_id("spiffe_id", &req.into_inner().spiffe_id)?;
        let n = self
            .store
            .delete_attested_node(&id)
            .await
            .map_err(status::store)?
            .ok_or_else(|| Status::not_found(format!("no attested agent '{id}'")))?;
        info!(agent = %n.spiffe_id, "agent evicted");
        Ok(Response::new(agent_pb(n)))
    }

    pub(super) async fn handle_set_federated_bundle(
        &self,
        req: Request<pb::SetFederatedBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        let r = req.into_inner();
        let td = parse_td(&r.trust_domain)?;
        let bundle = match (r.jwks_json.is_empty(), r.pem.is_empty()) {
            (false, true) => TrustBundle::from_jwks_json(td, &r.jwks_json)
                .map_err(|e| Status::invalid_argument(format!("jwks_json: {e}")))?,
            (true, false) => {
                let mut b = TrustBundle::new(td);
                b.x509_authorities = pem_certificates(&r.pem)?;
                b
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give the bundle as jwks_json or as pem (one of them)",
                ))
            }
        };
        self.store
            .put_federated_bundle(&bundle)
            .await
            .map_err(status::store)?;
        info!(trust_domain = %bundle.trust_domain, "federated bundle set");
        bundle_pb(&bundle).map(Response::new)
    }

    pub(super) async fn handle_delete_federated_bundle(
        &self,
        req: Request<pb::DeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::DeleteFederatedBundleResponse>, Status> {
        let actor = super::actor(&req);
        let r = req.into_inner();
        let td = parse_td(&r.trust_domain)?;
        let mode = pb::BundleDeleteMode::try_from(r.mode).map_err(|_| {
            Status::invalid_argument(format!(
                "mode {}: not a bundle delete mode (restrict, delete, dissociate)",
                r.mode
            ))
        })?;
        let settled = self
            .settle_entries_federating_with(&actor, &td, mode)
            .await?;
        let deleted = self
            .store
            .delete_federated_bundle(&td)
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::DeleteFederatedBundleResponse {
            deleted,
            entries_deleted: settled.deleted,
            entries_dissociated: settled.dissociated,
        }))
    }
}
