//! Which secrets one caller may have, and how SDS resource names map onto
//! them. The names are SPIRE's:
//!
//! - the SPIFFE ID of one of the caller's X.509-SVIDs: that SVID;
//! - `default_svid_name` (`default`): the caller's first SVID (by entry ID), under that name;
//! - `spiffe://<agent's trust domain>` or `default_bundle_name` (`ROOTCA`): the agent's bundle;
//! - `default_all_bundles_name` (`ALL`): the agent's and every federated bundle in one
//!   SPIFFE validator config;
//! - `spiffe://<federated trust domain>`: that bundle;
//! - no names at all: every bundle under its trust domain ID, and every SVID of the caller
//!   under its SPIFFE ID (not the aliases).
//!
//! Invariant: a private key is served only for an SVID of an entry whose
//! selectors are all among the caller's ([`Snapshot::matching`], the check
//! the Workload API makes). Any other name is refused as a whole: the
//! response never silently leaves out a name Envoy asked for. The agent's
//! bundle goes to any attested caller; a federated bundle only to a caller
//! one of whose entries federates with its trust domain
//! ([`Snapshot::federated_bundles_for`]), as SPIRE's SDS serves them.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use ironroot_api::selector::Selector;
use sha2::{Digest, Sha256};

use super::config::SdsConfig;
use super::error::SdsError;
use super::secrets::{tls_certificate, validation_context, BundleFormat, BundleRoots};
use crate::cache::{CachedSvid, Snapshot};

/// The secrets one caller may be served from one cache snapshot.
#[derive(Debug)]
pub(super) struct CallerSecrets<'a> {
    trust_domain: &'a str,
    roots: &'a [Vec<u8>],
    /// Federated trust domain name -> its X.509 roots.
    federated: BTreeMap<&'a str, Vec<Vec<u8>>>,
    /// The caller's unexpired SVIDs, by entry ID (SPIRE's order: the first is the default).
    svids: Vec<&'a CachedSvid>,
}

impl<'a> CallerSecrets<'a> {
    /// The view of `snap` for a caller with `selectors`, at `now` (unix seconds).
    pub(super) fn new(
        snap: &'a Snapshot,
        selectors: &[Selector],
        now: i64,
    ) -> Result<Self, SdsError> {
        if snap.roots.is_empty() {
            return Err(SdsError::NotSynced);
        }
        let mut svids: Vec<&CachedSvid> = snap
            .matching(selectors, now)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        svids.sort_by(|a, b| a.entry_id.cmp(&b.entry_id));
        // Bundles that did not parse were reported when the sync stored them.
        let federated = snap
            .federated_bundles_for(snap.matching_entries(selectors))
            .into_iter()
            .map(|(td, b)| (td, b.x509_authorities.clone()))
            .collect();
        Ok(CallerSecrets {
            trust_domain: &snap.trust_domain,
            roots: &snap.roots,
            federated,
            svids,
        })
    }

    /// A digest of everything this caller could be served: equal digests,
    /// equal answers. A held stream gets a new version only when it changes.
    pub(super) fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.trust_domain.as_bytes());
        self.roots.iter().for_each(|r| field(r));
        for (td, roots) in &self.federated {
            field(td.as_bytes());
            roots.iter().for_each(|r| field(r));
        }
        for s in &self.svids {
            field(s.entry_id.as_bytes());
            field(s.spiffe_id.as_bytes());
            s.chain.iter().for_each(|c| field(c));
            field(&s.key_pkcs8);
        }
        h.finalize().into()
    }

    fn own(&self) -> BundleRoots<'_> {
        BundleRoots {
            trust_domain: self.trust_domain,
            roots: self.roots,
        }
    }

    /// The bundle of the trust domain whose ID is `id` (`spiffe://name`).
    fn bundle_by_id(&self, id: &str) -> Option<BundleRoots<'_>> {
        let name = id.strip_prefix("spiffe://")?;
        if name == self.trust_domain {
            return Some(self.own());
        }
        self.federated
            .get_key_value(name)
            .map(|(td, roots)| BundleRoots {
                trust_domain: td,
                roots,
            })
    }

    /// The secrets for `requested` (empty names are ignored; no names: all).
    pub(super) fn resolve(
        &self,
        requested: &[String],
        cfg: &SdsConfig,
        format: BundleFormat,
    ) -> Result<Vec<Secret>, SdsError> {
        let mut names: Vec<&str> = Vec::new();
        for n in requested
            .iter()
            .map(String::as_str)
            .filter(|n| !n.is_empty())
        {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if names.is_empty() {
            return Ok(self.everything(format));
        }
        let mut out = Vec::with_capacity(names.len());
        let mut refused = Vec::new();
        for name in names {
            match self.one(name, cfg, format)? {
                Some(s) => out.push(s),
                None => refused.push(name.to_string()),
            }
        }
        if !refused.is_empty() {
            refused.sort();
            return Err(SdsError::NotAuthorized {
                names: refused,
                default_svid: cfg.default_svid_name.clone(),
                default_bundle: cfg.default_bundle_name.clone(),
                all_bundles: cfg.default_all_bundles_name.clone(),
            });
        }
        Ok(out)
    }

    /// The secret named `name`, `None` when the caller has no such resource.
    fn one(
        &self,
        name: &str,
        cfg: &SdsConfig,
        format: BundleFormat,
    ) -> Result<Option<Secret>, SdsError> {
        if name == cfg.default_bundle_name {
            return Ok(Some(validation_context(name, &[self.own()], format)));
        }
        if name == cfg.default_all_bundles_name {
            if format == BundleFormat::TrustedCa {
                return Err(SdsError::AllBundlesNeedSpiffeValidator {
                    name: name.to_string(),
                    default_bundle: cfg.default_bundle_name.clone(),
                });
            }
            return Ok(Some(validation_context(name, &self.all_bundles(), format)));
        }
        if name == cfg.default_svid_name {
            return Ok(self.svids.first().map(|s| tls_certificate(name, s)));
        }
        if let Some(b) = self.bundle_by_id(name) {
            return Ok(Some(validation_context(name, &[b], format)));
        }
        Ok(self
            .svids
            .iter()
            .find(|s| s.spiffe_id == name)
            .map(|s| tls_certificate(name, s)))
    }

    fn all_bundles(&self) -> Vec<BundleRoots<'_>> {
        let mut v = vec![self.own()];
        v.extend(self.federated.iter().map(|(td, roots)| BundleRoots {
            trust_domain: td,
            roots,
        }));
        v
    }

    /// No names requested: every bundle by trust domain ID, every SVID by
    /// SPIFFE ID (one per ID: the first by entry ID).
    fn everything(&self, format: BundleFormat) -> Vec<Secret> {
        let mut out: Vec<Secret> = self
            .all_bundles()
            .into_iter()
            .map(|b| validation_context(&format!("spiffe://{}", b.trust_domain), &[b], format))
            .collect();
        let mut seen: Vec<&str> = Vec::new();
        for s in &self.svids {
            if !seen.contains(&s.spiffe_id.as_str()) {
                seen.push(&s.spiffe_id);
                out.push(tls_certificate(&s.spiffe_id, s));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
