//! The SecretDiscoveryService gRPC service: attests the caller exactly as the
//! Workload API does (the connection's caller, identified at accept, through
//! the same workload attestors), then serves its secrets. Envoy sends no
//! `workload.spiffe.io` header and SDS requires none, as in SPIRE.

use std::sync::Arc;

use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, warn};

use super::config::SdsConfig;
use super::response;
use super::stream::{self, ResponseStream};
use crate::cache::Cache;
use crate::workload::attestor::WorkloadAttestor;
use crate::workload::caller::Caller;
use crate::workload_api::attest_request;
use ironroot_runtime::unix_now;

pub(crate) struct SdsService {
    cache: Cache,
    attestors: Vec<Arc<dyn WorkloadAttestor>>,
    cfg: Arc<SdsConfig>,
}

impl SdsService {
    pub(crate) fn new(
        cache: Cache,
        attestors: Vec<Arc<dyn WorkloadAttestor>>,
        cfg: SdsConfig,
    ) -> Self {
        SdsService {
            cache,
            attestors,
            cfg: Arc::new(cfg),
        }
    }
}

fn caller_pid<T>(req: &Request<T>) -> i32 {
    req.extensions().get::<Arc<Caller>>().map_or(0, |c| c.pid)
}

type DeltaStream =
    std::pin::Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SecretDiscoveryService for SdsService {
    type DeltaSecretsStream = DeltaStream;
    type StreamSecretsStream = ResponseStream;

    /// Not served (nor by SPIRE): Envoy's SDS uses StreamSecrets unless its
    /// config source asks for DELTA_GRPC.
    async fn delta_secrets(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "DeltaSecrets is not implemented: configure Envoy's SDS config source with \
             api_type GRPC (StreamSecrets)",
        ))
    }

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let pid = caller_pid(&req);
        let selectors = attest_request(&self.attestors, &req).await?;
        debug!(pid, "StreamSecrets stream opened");
        Ok(Response::new(stream::serve(
            req.into_inner(),
            &self.cache,
            selectors,
            self.cfg.clone(),
            pid,
        )))
    }

    async fn fetch_secrets(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let pid = caller_pid(&req);
        let selectors = attest_request(&self.attestors, &req).await?;
        let r = req.into_inner();
        let snap = self.cache.snapshot();
        response::build(&snap, &selectors, unix_now(), &r, r.node.as_ref(), &self.cfg)
            .map(|resp| {
                debug!(pid, resource_names = ?r.resource_names, count = resp.resources.len(), "FetchSecrets response");
                Response::new(resp)
            })
            .map_err(|e| {
                warn!(pid, resource_names = ?r.resource_names, error = %e, "FetchSecrets refused");
                e.into()
            })
    }
}
