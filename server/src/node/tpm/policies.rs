//! Named measured-boot policies loaded from a directory, and which one binds
//! a node (by selector, else the default). An unknown or missing policy
//! name rejects the node: nothing passes by omission.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironroot_api::selector::{Selector, SelectorError};
use ironroot_tpm::verify::eventlog::HashAlg;
use ironroot_tpm::verify::policy::{Policy, PolicyError};
use tracing::{info, warn};

use crate::config::PolicyBinding;
use crate::node::AttestError;

/// Why the policies could not be loaded: start-up stops, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicySetError {
    /// `policies_dir` cannot be listed.
    #[error("cannot read policies_dir {}: {source}", dir.display())]
    ReadDir {
        /// The configured `policies_dir`.
        dir: PathBuf,
        /// The I/O error (missing directory, permissions).
        #[source]
        source: std::io::Error,
    },
    /// A policy file cannot be read.
    #[error("cannot read policy {}: {source}", path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The I/O error (permissions, not a file).
        #[source]
        source: std::io::Error,
    },
    /// A policy file is not a valid policy.
    #[error("policy {} is invalid: {source}", path.display())]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// What is invalid: the TOML error or the rule it breaks.
        #[source]
        source: PolicyError,
    },
    /// A policy pins a PCR in another bank than its own: only the policy's bank is quoted,
    /// so that value would be checked against log digests no quote vouches for.
    #[error(
        "policy {} pins PCR {pcr} in another bank than its own ({pinned:?} vs {bank:?}): only \
         the policy's bank is quoted",
        path.display()
    )]
    ForeignBank {
        /// The policy file.
        path: PathBuf,
        /// The pinned PCR index.
        pcr: u32,
        /// The bank of the pinned value.
        pinned: HashAlg,
        /// The bank the policy is for (its `bank`).
        bank: HashAlg,
    },
    /// Two files define the same policy name: which one binds would be a guess.
    #[error("two policies are named '{name}' (in {})", dir.display())]
    DuplicateName {
        /// The policy name.
        name: String,
        /// The configured `policies_dir`.
        dir: PathBuf,
    },
    /// A binding's selector does not parse.
    #[error("policy binding selector {selector:?}: {source}")]
    BindingSelector {
        /// The selector as configured.
        selector: String,
        /// Why it does not parse (expected `type:value`).
        #[source]
        source: SelectorError,
    },
}

/// The measured-boot policies a TPM attestor judges nodes with, by name, and the rules that
/// pick one for a node: the first binding whose selector the node has, else the default.
/// Loaded once at start-up; immutable afterwards.
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
    ) -> Result<Self, PolicySetError> {
        let mut policies = BTreeMap::new();
        let read_dir = |source| PolicySetError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let entries = std::fs::read_dir(dir).map_err(read_dir)?;
        for entry in entries {
            let path = entry.map_err(read_dir)?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(source) => return Err(PolicySetError::Read { path, source }),
            };
            let policy = match Policy::from_toml(&text) {
                Ok(p) => p,
                Err(source) => return Err(PolicySetError::Invalid { path, source }),
            };
            if let Some(p) = policy.pcrs.iter().find(|p| p.bank != policy.bank) {
                return Err(PolicySetError::ForeignBank {
                    pcr: p.index,
                    pinned: p.bank,
                    bank: policy.bank,
                    path,
                });
            }
            if policies.contains_key(&policy.name) {
                return Err(PolicySetError::DuplicateName {
                    name: policy.name,
                    dir: dir.to_path_buf(),
                });
            }
            info!(policy = %policy.name, file = %path.display(), "measured-boot policy loaded");
            policies.insert(policy.name.clone(), Arc::new(policy));
        }
        let bindings = bindings
            .iter()
            .map(|b| {
                Selector::parse(&b.selector)
                    .map(|s| (s, b.policy.clone()))
                    .map_err(|source| PolicySetError::BindingSelector {
                        selector: b.selector.clone(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
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
    pub(crate) fn select(&self, selectors: &[Selector]) -> Result<Arc<Policy>, AttestError> {
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
