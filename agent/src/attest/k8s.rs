//! The Kubernetes node attestor's agent half (`k8s_psat`), built with the `k8s` cargo
//! feature (off by default: the edge agent stays small).
//! None is written yet (issue 12). Each lands as a file here implementing
//! [`super::AgentNodeAttestor`], a variant of `NodeAttestorKind` (behind the feature)
//! and an arm in [`super::attestor_for`].
