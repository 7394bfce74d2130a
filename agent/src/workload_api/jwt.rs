//! JWT-SVIDs for a caller: from the agent's JWT-SVID cache while fresh, else
//! minted by the server within the caller's mint rate.

use std::time::Instant;

use ironroot_api::agent as agent_pb;
use ironroot_runtime::unix_now;
use tonic::Status;
use tracing::debug;

use super::WorkloadApi;
use crate::cache::CachedEntry;

impl WorkloadApi {
    /// A JWT-SVID for `entry` and `audience`, from the cache while it has more
    /// than half its life left, else minted by the server within `uid`'s
    /// mint rate.
    pub(super) async fn jwt_for(
        &self,
        uid: u32,
        entry: &CachedEntry,
        audience: &[String],
    ) -> Result<String, Status> {
        let now = unix_now();
        if let Ok(mut c) = self.jwt_cache.lock() {
            c.sweep_if_due(now);
            if let Some(t) = c.get(&entry.id, audience, now) {
                return Ok(t);
            }
        }
        self.limits
            .admit_jwt_mint(uid, Instant::now())
            .map_err(|e| e.to_status())?;
        let mut client =
            self.server.read().await.clone().ok_or_else(|| {
                Status::unavailable("the agent is not connected to its server yet")
            })?;
        let resp = client
            .new_jwt_svid(agent_pb::NewJwtSvidRequest {
                entry_id: entry.id.clone(),
                audience: audience.to_vec(),
            })
            .await
            .map_err(|s| Status::unavailable(format!("JWT-SVID not available: {}", s.message())))?
            .into_inner();
        if let Ok(mut c) = self.jwt_cache.lock() {
            c.insert(
                &entry.id,
                audience,
                resp.token.clone(),
                now,
                resp.expires_at,
                unix_now(),
            );
            debug!(
                entry = %entry.id,
                cached_for_identity = c.len_of(&entry.id),
                cached_total = c.len(),
                "JWT-SVID minted"
            );
        }
        Ok(resp.token)
    }
}
