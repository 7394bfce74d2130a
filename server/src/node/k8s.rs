//! The Kubernetes node attestor (`k8s_psat`), built with the `k8s` cargo feature (on by
//! default for the server). Not written yet (issue 12):
//! this is the hook [`super::registry::build`] calls, so each lands as a file here, a
//! variant of `NodeAttestorConfig` and a line of the registry's `CATALOGUE`.

use std::sync::Arc;

use super::registry::BuildContext;
use super::NodeAttestor;
use crate::config::NodeAttestorsConfig;
use crate::run::StartError;

/// The attestors of this family that `[node_attestors]` enables (none yet).
pub(super) fn build(
    _cfg: &NodeAttestorsConfig,
    _ctx: &BuildContext<'_>,
) -> Result<Vec<Arc<dyn NodeAttestor>>, StartError> {
    Ok(Vec::new())
}
