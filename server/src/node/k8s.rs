//! The Kubernetes node attestor (`k8s_psat`, [`psat`]), built with the `k8s` cargo feature
//! (on by default for the server): the hook [`super::registry::build`] calls.

mod psat;

use std::sync::Arc;

use super::registry::BuildContext;
use super::NodeAttestor;
use crate::config::{NodeAttestorConfig, NodeAttestorsConfig};
use crate::run::StartError;

/// The attestors of this family that `[node_attestors]` enables.
pub(super) fn build(
    cfg: &NodeAttestorsConfig,
    ctx: &BuildContext<'_>,
) -> Result<Vec<Arc<dyn NodeAttestor>>, StartError> {
    let mut out: Vec<Arc<dyn NodeAttestor>> = Vec::new();
    for section in cfg.sections() {
        #[allow(irrefutable_let_patterns)]
        if let NodeAttestorConfig::K8sPsat(c) = section {
            out.push(Arc::new(psat::K8sPsatAttestor::build(c, ctx)?));
        }
    }
    Ok(out)
}
