//! Named measured-boot policies loaded from a directory, and which one binds
//! a node (by selector, else the default). An unknown or missing policy
//! name rejects the node: nothing passes by omission.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ironroot_api::selector::Selector;
use ironroot_tpm::verify::policy::Policy;
use tracing::{info, warn};

use crate::config::PolicyBinding;
use crate::node::AttestError;

pub struct PolicySet {
    policies: BTreeMap<String, Arc<Policy>>,
    bindings: Vec<(Selector, String)>,
    default: Option<String>,
}

impl PolicySet {
    /// Loads every `*.toml` in `dir`. A file that does not parse stops start-up.
    pub fn load(
        dir: &Path,
        bindings: &[PolicyBinding],
        default: Option<String>,
    ) -> anyhow::Result<Self> {
        let mut policies = BTreeMap::new();
        let entries = std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("cannot read policies_dir {}: {e}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| anyhow::anyhow!("cannot read policy {}: {e}", path.display()))?;
            let policy = Policy::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("policy {} is invalid: {e}", path.display()))?;
            // Only the policy's bank is quoted: a value pinned in another bank would be
            // checked against log digests no quote vouches for.
            if let Some(p) = policy.pcrs.iter().find(|p| p.bank != policy.bank) {
                anyhow::bail!(
                    "policy {} pins PCR {} in another bank than its own ({:?} vs {:?}): only the policy's bank is quoted",
                    path.display(),
                    p.index,
                    p.bank,
                    policy.bank
                );
            }
            if policies.contains_key(&policy.name) {
                anyhow::bail!(
                    "two policies are named '{}' (in {})",
                    policy.name,
                    dir.display()
                );
            }
            info!(policy = %policy.name, file = %path.display(), "measured-boot policy loaded");
            policies.insert(policy.name.clone(), Arc::new(policy));
        }
        let bindings = bindings
            .iter()
            .map(|b| {
                Selector::parse(&b.selector)
                    .map(|s| (s, b.policy.clone()))
                    .map_err(|e| anyhow::anyhow!("policy binding selector {:?}: {e}", b.selector))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let set = PolicySet {
            policies,
            bindings,
            default,
        };
        for name in set.bindings.iter().map(|b| &b.1).chain(set.default.iter()) {
            if !set.policies.contains_key(name) {
                warn!(policy = %name, "a binding names a policy that is not loaded: nodes bound to it will be rejected");
            }
        }
        Ok(set)
    }

    /// The policy bound to a node with `selectors`.
    pub fn select(&self, selectors: &[Selector]) -> Result<Arc<Policy>, AttestError> {
        let name = self
            .bindings
            .iter()
            .find(|(s, _)| selectors.contains(s))
            .map(|(_, p)| p)
            .or(self.default.as_ref())
            .ok_or_else(|| {
                AttestError::rejected(
                    "measured-boot policy",
                    "no policy applies to this node: set default_policy or a policy binding for one of its selectors",
                )
            })?;
        self.policies.get(name).cloned().ok_or_else(|| {
            AttestError::rejected(
                "measured-boot policy",
                format!(
                    "the node is bound to policy '{name}', which is not loaded (loaded: {})",
                    self.policies.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }
}
