//! Registration entries: which selectors earn which SPIFFE ID, under which parent.

use serde::{Deserialize, Serialize};

use crate::admin;
use crate::selector::{normalize_selectors, Selector, SelectorError};
use crate::spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};

/// Most selectors an entry may carry.
pub const MAX_SELECTORS: usize = 64;
/// Longest TTL an entry may ask for, in seconds (one year of 365 days).
pub const MAX_TTL_SECS: u32 = 365 * 24 * 3600;
/// Longest hint, in bytes.
pub const MAX_HINT_LEN: usize = 1024;
/// Longest DNS name, in bytes (RFC 1035).
pub const MAX_DNS_NAME_LEN: usize = 253;
/// SPIFFE IDs under this path are the server's and agents' own (SPIRE convention).
pub const RESERVED_PATH: &str = "/spire";
/// Most trust domains an entry may federate with.
pub const MAX_FEDERATES_WITH: usize = 64;

mod federates_with;
pub use federates_with::parse_federated_trust_domain;

/// Why an entry (or its wire form) is not valid. Every variant names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A required field is absent from the wire form.
    #[error("{field}: missing")]
    MissingField {
        /// The field, named as on the wire.
        field: &'static str,
    },
    /// A SPIFFE ID field does not parse.
    #[error("{field}: {source}")]
    SpiffeId {
        /// The field, named as on the wire.
        field: &'static str,
        /// Why it is not valid.
        #[source]
        source: SpiffeIdError,
    },
    /// A SPIFFE ID field is in another trust domain.
    #[error("{field}: '{id}' is not in the trust domain '{trust_domain}'")]
    ForeignTrustDomain {
        /// The field, named as on the wire.
        field: &'static str,
        /// The SPIFFE ID given.
        id: String,
        /// The entry's trust domain.
        trust_domain: String,
    },
    /// `spiffe_id` is the bare trust domain ID, which belongs to the CA.
    #[error("spiffe_id: '{id}' has no path; the trust domain's own ID belongs to its CA")]
    EmptyPath {
        /// The SPIFFE ID given.
        id: String,
    },
    /// `spiffe_id` is under `/spire/`.
    #[error("spiffe_id: '{id}' is under the reserved path '/spire/'")]
    ReservedPath {
        /// The SPIFFE ID given.
        id: String,
    },
    /// No selectors.
    #[error("selectors: at least one selector is required")]
    NoSelectors,
    /// More than [`MAX_SELECTORS`].
    #[error("selectors: {count} selectors; the maximum is {max}")]
    TooManySelectors {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One selector is invalid.
    #[error("selectors[{index}]: {source}")]
    Selector {
        /// Its position in the list.
        index: usize,
        /// Why it is not valid.
        #[source]
        source: SelectorError,
    },
    /// One DNS name is invalid.
    #[error("dns_names[{index}]: '{name}' is not a valid DNS name: {reason}")]
    DnsName {
        /// Its position in the list.
        index: usize,
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A TTL is negative (wire form only).
    #[error("{field}: {value} is negative")]
    NegativeTtl {
        /// The field, named as on the wire.
        field: &'static str,
        /// The value given.
        value: i64,
    },
    /// A TTL is longer than [`MAX_TTL_SECS`].
    #[error("{field}: {value} seconds is longer than the maximum of {max} (one year)")]
    TtlTooLong {
        /// The field, named as on the wire.
        field: &'static str,
        /// The value given.
        value: u64,
        /// The limit.
        max: u32,
    },
    /// The hint is longer than [`MAX_HINT_LEN`].
    #[error("hint: {len} bytes long; the maximum is {max}")]
    HintTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `expires_at` is negative.
    #[error("expires_at: {value} is negative (0 means never)")]
    NegativeExpiry {
        /// The value given.
        value: i64,
    },
    /// One `federates_with` item is not a trust domain.
    #[error(
        "federates_with[{index}]: '{value}' is not a trust domain \
         (write 'example.org' or 'spiffe://example.org'): {reason}"
    )]
    FederatesWith {
        /// Its position in the list.
        index: usize,
        /// What was given (truncated to 256 bytes).
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More than [`MAX_FEDERATES_WITH`] trust domains.
    #[error("federates_with: {count} trust domains; the maximum is {max}")]
    TooManyFederatesWith {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// `federates_with` names the entry's own trust domain, whose bundle
    /// every workload gets anyway; SPIRE refuses it too.
    #[error(
        "federates_with: '{trust_domain}' is the entry's own trust domain, not a federated one \
         (its bundle is served to every workload already)"
    )]
    FederatesWithOwnTrustDomain {
        /// The trust domain.
        trust_domain: String,
    },
    /// `federates_with` names a trust domain the server holds no federated
    /// bundle of (rule `federates-with-needs-bundle`, as in SPIRE): its
    /// workloads would be promised a bundle nobody can give them. Checked by
    /// the server at create and update, where the stored bundles are known.
    #[error(
        "federates_with: the server has no federated bundle of '{trust_domain}' \
         (rule federates-with-needs-bundle): store it first with \
         `ironroot-server bundle set --id {trust_domain}`, or wait for the first fetch \
         of its [[federation.federates_with]] relationship"
    )]
    FederatedBundleMissing {
        /// The trust domain.
        trust_domain: String,
    },
}

/// The fields an operator sets on an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntrySpec {
    /// The identity granted.
    pub spiffe_id: SpiffeId,
    /// Who may obtain it: an agent's ID (or another entry's, for nesting).
    pub parent_id: SpiffeId,
    /// All must match; kept sorted and deduplicated (see [`EntrySpec::normalize`]).
    pub selectors: Vec<Selector>,
    /// X.509-SVID lifetime in seconds; 0 means the server default.
    pub x509_svid_ttl: u32,
    /// JWT-SVID lifetime in seconds; 0 means the server default.
    pub jwt_svid_ttl: u32,
    /// DNS SANs for the X.509-SVID.
    pub dns_names: Vec<String>,
    /// The SVID may use the admin API.
    pub admin: bool,
    /// The SVID may sign downstream CAs.
    pub downstream: bool,
    /// Free text handed to the workload to tell SVIDs apart.
    pub hint: String,
    /// Unix seconds after which the entry is no longer served; 0 means never.
    pub expires_at: i64,
    /// Trust domains whose federated bundles this entry's workloads receive
    /// (SPIRE's `federates_with`); kept sorted and deduplicated. Never the
    /// entry's own. Records written before the field existed have none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub federates_with: Vec<TrustDomain>,
}

/// A stored entry: the spec plus what the server assigns. Stored and sent with the spec's
/// fields beside `id` (flattened), as before the spec had its own type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationEntry {
    /// Server-assigned id (a UUID).
    pub id: String,
    /// What the operator set; selectors sorted and deduplicated.
    #[serde(flatten)]
    pub spec: EntrySpec,
    /// Starts at 0 and goes up by one on every update.
    pub revision: i64,
    /// Unix seconds.
    pub created_at: i64,
}

impl EntrySpec {
    /// Sorts and deduplicates the selectors, the form in which entries are
    /// stored and compared for duplicates.
    pub fn normalize(&mut self) {
        normalize_selectors(&mut self.selectors);
        self.federates_with.sort();
        self.federates_with.dedup();
    }

    /// Checks every rule that needs no clock and no store.
    pub fn validate(&self, trust_domain: &TrustDomain) -> Result<(), EntryError> {
        for (field, id) in [
            ("spiffe_id", &self.spiffe_id),
            ("parent_id", &self.parent_id),
        ] {
            if !id.is_member_of(trust_domain) {
                return Err(EntryError::ForeignTrustDomain {
                    field,
                    id: id.to_string(),
                    trust_domain: trust_domain.to_string(),
                });
            }
        }
        let path = self.spiffe_id.path();
        if path.is_empty() {
            return Err(EntryError::EmptyPath {
                id: self.spiffe_id.to_string(),
            });
        }
        if path == RESERVED_PATH || path.starts_with("/spire/") {
            return Err(EntryError::ReservedPath {
                id: self.spiffe_id.to_string(),
            });
        }
        if self.selectors.is_empty() {
            return Err(EntryError::NoSelectors);
        }
        if self.selectors.len() > MAX_SELECTORS {
            return Err(EntryError::TooManySelectors {
                count: self.selectors.len(),
                max: MAX_SELECTORS,
            });
        }
        for (index, s) in self.selectors.iter().enumerate() {
            s.validate()
                .map_err(|source| EntryError::Selector { index, source })?;
        }
        for (index, name) in self.dns_names.iter().enumerate() {
            validate_dns_name(name).map_err(|reason| EntryError::DnsName {
                index,
                name: name.chars().take(MAX_DNS_NAME_LEN + 1).collect(),
                reason,
            })?;
        }
        for (field, ttl) in [
            ("x509_svid_ttl", self.x509_svid_ttl),
            ("jwt_svid_ttl", self.jwt_svid_ttl),
        ] {
            if ttl > MAX_TTL_SECS {
                return Err(EntryError::TtlTooLong {
                    field,
                    value: u64::from(ttl),
                    max: MAX_TTL_SECS,
                });
            }
        }
        if self.hint.len() > MAX_HINT_LEN {
            return Err(EntryError::HintTooLong {
                len: self.hint.len(),
                max: MAX_HINT_LEN,
            });
        }
        if self.expires_at < 0 {
            return Err(EntryError::NegativeExpiry {
                value: self.expires_at,
            });
        }
        federates_with::validate(&self.federates_with, trust_domain)
    }

    /// Checks that each trust domain of `federates_with` has a stored
    /// federated bundle (`has_bundle` answers for one), SPIRE's rule
    /// `federates-with-needs-bundle`; the first without one is the error.
    pub fn check_federated_bundles(
        &self,
        has_bundle: impl Fn(&TrustDomain) -> bool,
    ) -> Result<(), EntryError> {
        match self.federates_with.iter().find(|td| !has_bundle(td)) {
            Some(td) => Err(EntryError::FederatedBundleMissing {
                trust_domain: td.to_string(),
            }),
            None => Ok(()),
        }
    }
}

impl RegistrationEntry {
    /// Builds a stored entry from a spec and the server-assigned fields.
    pub fn from_spec(id: String, spec: EntrySpec, revision: i64, created_at: i64) -> Self {
        RegistrationEntry {
            id,
            spec,
            revision,
            created_at,
        }
    }
}

/// Checks a DNS SAN: labels of 1-63 letters, digits and inner hyphens,
/// at most 253 bytes, no trailing dot; a leading `*.` wildcard label is allowed.
fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_DNS_NAME_LEN {
        return Err("it is longer than 253 bytes");
    }
    let rest = name.strip_prefix("*.").unwrap_or(name);
    for label in rest.split('.') {
        if label.is_empty() {
            return Err("it has an empty label (leading, trailing or double '.')");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 bytes");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err("only letters, digits, '-' and '.' are allowed (and '*.' first)");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label starts or ends with '-'");
        }
    }
    Ok(())
}

fn parse_id(field: &'static str, s: &str) -> Result<SpiffeId, EntryError> {
    if s.is_empty() {
        return Err(EntryError::MissingField { field });
    }
    SpiffeId::parse(s).map_err(|source| EntryError::SpiffeId { field, source })
}

fn parse_ttl(field: &'static str, v: i32) -> Result<u32, EntryError> {
    u32::try_from(v).map_err(|_| EntryError::NegativeTtl {
        field,
        value: i64::from(v),
    })
}

fn ttl_to_wire(v: u32) -> i32 {
    // Validated TTLs fit; saturate rather than wrap for any that were not.
    i32::try_from(v).unwrap_or(i32::MAX)
}

impl From<Selector> for admin::Selector {
    fn from(s: Selector) -> Self {
        admin::Selector {
            r#type: s.kind,
            value: s.value,
        }
    }
}

impl TryFrom<admin::Selector> for Selector {
    type Error = SelectorError;
    fn try_from(s: admin::Selector) -> Result<Self, Self::Error> {
        Selector::new(s.r#type, s.value)
    }
}

/// Parses the wire form; selectors come out sorted and deduplicated. Does not
/// run [`EntrySpec::validate`], which needs the trust domain.
impl TryFrom<admin::EntryFields> for EntrySpec {
    type Error = EntryError;
    fn try_from(f: admin::EntryFields) -> Result<Self, Self::Error> {
        let selectors = f
            .selectors
            .into_iter()
            .enumerate()
            .map(|(index, s)| {
                Selector::try_from(s).map_err(|source| EntryError::Selector { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut spec = EntrySpec {
            spiffe_id: parse_id("spiffe_id", &f.spiffe_id)?,
            parent_id: parse_id("parent_id", &f.parent_id)?,
            selectors,
            x509_svid_ttl: parse_ttl("x509_svid_ttl", f.x509_svid_ttl)?,
            jwt_svid_ttl: parse_ttl("jwt_svid_ttl", f.jwt_svid_ttl)?,
            dns_names: f.dns_names,
            admin: f.admin,
            downstream: f.downstream,
            hint: f.hint,
            expires_at: f.expires_at,
            federates_with: f
                .federates_with
                .iter()
                .enumerate()
                .map(|(index, s)| parse_federated_trust_domain(index, s))
                .collect::<Result<_, _>>()?,
        };
        spec.normalize();
        Ok(spec)
    }
}

impl From<EntrySpec> for admin::EntryFields {
    fn from(s: EntrySpec) -> Self {
        admin::EntryFields {
            spiffe_id: s.spiffe_id.to_string(),
            parent_id: s.parent_id.to_string(),
            selectors: s.selectors.into_iter().map(Into::into).collect(),
            x509_svid_ttl: ttl_to_wire(s.x509_svid_ttl),
            jwt_svid_ttl: ttl_to_wire(s.jwt_svid_ttl),
            dns_names: s.dns_names,
            admin: s.admin,
            downstream: s.downstream,
            hint: s.hint,
            expires_at: s.expires_at,
            federates_with: s.federates_with.into_iter().map(String::from).collect(),
        }
    }
}

impl TryFrom<admin::Entry> for RegistrationEntry {
    type Error = EntryError;
    fn try_from(e: admin::Entry) -> Result<Self, Self::Error> {
        if e.id.is_empty() {
            return Err(EntryError::MissingField { field: "id" });
        }
        let fields = e
            .fields
            .ok_or(EntryError::MissingField { field: "fields" })?;
        let spec = EntrySpec::try_from(fields)?;
        Ok(RegistrationEntry::from_spec(
            e.id,
            spec,
            e.revision_number,
            e.created_at,
        ))
    }
}

impl From<RegistrationEntry> for admin::Entry {
    fn from(e: RegistrationEntry) -> Self {
        let RegistrationEntry {
            id,
            spec,
            revision,
            created_at,
        } = e;
        admin::Entry {
            id,
            fields: Some(spec.into()),
            revision_number: revision,
            created_at,
        }
    }
}

#[cfg(test)]
mod tests;
