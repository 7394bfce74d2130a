//! The cloud node attestors' agent halves (`aws_iid`, `gcp_iit`, `azure_msi`, `azure_imds`),
//! built with the `cloud` cargo feature (off by default: the edge agent stays small).
//! None is written yet (issue 12). Each lands as a file here implementing
//! [`super::AgentNodeAttestor`], a variant of `NodeAttestorKind` (behind the feature)
//! and an arm in [`super::attestor_for`].
