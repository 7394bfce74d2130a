//! The policy document and its TOML form.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::violation::PolicyRule;
use crate::verify::eventlog::{Digest, HashAlg};

/// The PCRs boot loaders measure into: GRUB (8, 9), the Linux EFI stub (9), systemd-boot
/// and systemd-stub (12).
pub const BOOT_LOADER_PCRS: [u32; 3] = [8, 9, 12];

/// A digest written as hex in TOML. Its length is checked against the policy's bank by
/// [`Policy::validate`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HexDigest(pub Vec<u8>);

impl HexDigest {
    /// From a digest.
    pub fn of(d: &Digest) -> Self {
        Self(d.as_bytes().to_vec())
    }

    /// True when `d` has these bytes.
    pub fn matches(&self, d: &Digest) -> bool {
        self.0 == d.as_bytes()
    }
}

impl std::fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl Serialize for HexDigest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for HexDigest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s.trim())
            .map(Self)
            .map_err(|e| serde::de::Error::custom(format!("digest {s:?} is not hex: {e}")))
    }
}

/// An exact PCR value the replayed log must give.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcrValue {
    /// Bank.
    pub bank: HashAlg,
    /// PCR index (0-23).
    pub index: u32,
    /// Expected value.
    pub value: HexDigest,
}

fn default_bank() -> HashAlg {
    HashAlg::Sha256
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A named measured-boot policy: what a good boot looks like. A list left out (`None`) is
/// not checked; a list given is an allow-list (empty: nothing allowed). A policy must have
/// at least one rule.
///
/// Every rule reads whole PCRs ([`Policy::pcrs_read`]), and in each PCR it reads, every
/// event must have a type the TCG PC Client profile puts there (PCR7 also its shape:
/// configuration, one separator, authorities). PCR8, 9 and 12, where boot loaders measure,
/// are read together by `kernel_cmdlines`, `kernel_cmdline_digests`, `initrds`,
/// `boot_loader_strings` and `boot_loader_digests`: when any of them is set, every digest
/// in those PCRs must be allowed by one of them (what an event claims to be is not bound
/// to its digest, so a digest allowed as an initrd is allowed wherever it appears, and an
/// unknown one is refused whatever it claims).
///
/// ```toml
/// name = "edge-gateway"
/// bank = "sha256"
/// require_secure_boot = true
/// db = ["<digest of the PCR7 db event>"]
/// dbx_required = ["<sha256 of a dbx entry>"]
/// boot_applications = ["<PCR4 EV_EFI_BOOT_SERVICES_APPLICATION digest>"]
/// kernel_cmdlines = ["console=ttyS0 quiet"]
/// initrds = ["<initrd digest>"]
/// boot_loader_strings = ["set root=(hd0,gpt2)"]
/// boot_loader_digests = ["<digest of grub.cfg>"]
///
/// [[pcrs]]
/// bank = "sha256"
/// index = 7
/// value = "<hex>"
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Policy name (reported as the `tpm:boot_policy:<name>` selector).
    pub name: String,
    /// Bank whose logged digests the digest rules compare (default sha256).
    #[serde(default = "default_bank")]
    pub bank: HashAlg,
    /// SecureBoot=1 (with data matching its digest) as the last SecureBoot measurement
    /// before the PCR7 separator ([`BootState::secure_boot_enabled`]), no PCR7
    /// configuration event after that separator, at least one EV_EFI_VARIABLE_AUTHORITY in
    /// PCR7 and at least one measured boot application in PCR4. SecureBoot=1 alone is not
    /// enough: OVMF falls back to an unverified loader that measures neither. A log without
    /// a PCR7 separator fails.
    ///
    /// [`BootState::secure_boot_enabled`]: crate::verify::eventlog::BootState::secure_boot_enabled
    #[serde(default, skip_serializing_if = "is_false")]
    pub require_secure_boot: bool,
    /// Allowed digests of the PCR7 PK event: the last PK measured before the PCR7
    /// separator. Also fails when the log has no PCR7 separator or measures PK after it
    /// (the same holds for `kek`, `db` and `dbx_required`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pk: Option<Vec<HexDigest>>,
    /// Allowed digests of the PCR7 KEK event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kek: Option<Vec<HexDigest>>,
    /// Allowed digests of the PCR7 db event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<Vec<HexDigest>>,
    /// dbx entries that must be present, by SHA-256 fingerprint (the hash itself for an
    /// EFI_CERT_SHA256 entry, SHA-256 of the data otherwise), in the one dbx a policy reads:
    /// the last measured before the PCR7 separator (never a union of several).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dbx_required: Vec<HexDigest>,
    /// Allowed PCR4 EV_EFI_BOOT_SERVICES_APPLICATION digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_applications: Option<Vec<HexDigest>>,
    /// Allowed kernel command lines, as text (hashed the way each boot loader measures).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cmdlines: Option<Vec<String>>,
    /// Allowed kernel command line digests, for measurements that do not log the text
    /// (the Linux EFI stub's LoadOptions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_cmdline_digests: Option<Vec<HexDigest>>,
    /// Allowed initrd digests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrds: Option<Vec<HexDigest>>,
    /// Allowed boot-loader strings in PCR8/9/12 (GRUB's commands after their `grub_cmd: `
    /// prefix, systemd-boot's strings), as text hashed the way boot loaders hash strings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_loader_strings: Option<Vec<String>>,
    /// Allowed digests of any other PCR8/9/12 measurement (the files GRUB reads: grub.cfg,
    /// the kernel, modules; systemd-stub's credentials and sections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_loader_digests: Option<Vec<HexDigest>>,
    /// Exact PCR values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pcrs: Vec<PcrValue>,
}

/// Why a policy document is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// TOML syntax, an unknown key, a wrong type or bad hex.
    #[error("policy TOML: {0}")]
    Toml(String),
    /// Serializing failed.
    #[error("policy serialization: {0}")]
    Serialize(String),
    /// `name` is empty.
    #[error("policy has an empty name")]
    EmptyName,
    /// The bank is not one this crate computes.
    #[error("policy bank {0} cannot be computed")]
    UnknownBank(HashAlg),
    /// A digest of the wrong length.
    #[error("policy {policy:?}: {field}[{position}] is {len} bytes, a {bank} digest is {want}")]
    DigestLength {
        /// Policy name.
        policy: String,
        /// The TOML key.
        field: &'static str,
        /// Position in the list.
        position: usize,
        /// Its length.
        len: usize,
        /// Bank.
        bank: HashAlg,
        /// Expected length.
        want: usize,
    },
    /// The policy has no rule: it would accept every boot.
    #[error("policy {0:?} has no rule: it would accept every boot (pin PCRs, or set require_secure_boot or an allow-list; `ironroot-server policy generate` writes one from a known-good boot)")]
    NoRule(String),
    /// A PCR index over 23.
    #[error("policy {policy:?}: pcrs[{position}] has index {index} (must be 0-23)")]
    PcrIndex {
        /// Policy name.
        policy: String,
        /// Position in `pcrs`.
        position: usize,
        /// The index.
        index: u32,
    },
}

impl Policy {
    /// A policy that checks nothing yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bank: default_bank(),
            require_secure_boot: false,
            pk: None,
            kek: None,
            db: None,
            dbx_required: Vec::new(),
            boot_applications: None,
            kernel_cmdlines: None,
            kernel_cmdline_digests: None,
            initrds: None,
            boot_loader_strings: None,
            boot_loader_digests: None,
            pcrs: Vec::new(),
        }
    }

    /// True when a rule reads the boot-loader PCRs 8, 9 and 12.
    pub fn reads_boot_loader(&self) -> bool {
        self.kernel_cmdlines.is_some()
            || self.kernel_cmdline_digests.is_some()
            || self.initrds.is_some()
            || self.boot_loader_strings.is_some()
            || self.boot_loader_digests.is_some()
    }

    /// Every PCR some rule reads, with the rules that read it (in the policy's order).
    pub fn pcrs_read(&self) -> std::collections::BTreeMap<u32, Vec<PolicyRule>> {
        let mut out: std::collections::BTreeMap<u32, Vec<PolicyRule>> = Default::default();
        let mut add = |pcr: u32, rule: PolicyRule| {
            let rules = out.entry(pcr).or_default();
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        };
        if self.require_secure_boot {
            add(7, PolicyRule::RequireSecureBoot);
            add(4, PolicyRule::RequireSecureBoot);
        }
        for (set, rule) in [
            (self.pk.is_some(), PolicyRule::Pk),
            (self.kek.is_some(), PolicyRule::Kek),
            (self.db.is_some(), PolicyRule::Db),
            (!self.dbx_required.is_empty(), PolicyRule::DbxRequired),
        ] {
            if set {
                add(7, rule);
            }
        }
        if self.boot_applications.is_some() {
            add(4, PolicyRule::BootApplications);
        }
        for (set, rule) in [
            (
                self.kernel_cmdlines.is_some() || self.kernel_cmdline_digests.is_some(),
                PolicyRule::KernelCmdlines,
            ),
            (self.initrds.is_some(), PolicyRule::Initrds),
            (
                self.boot_loader_strings.is_some(),
                PolicyRule::BootLoaderStrings,
            ),
            (
                self.boot_loader_digests.is_some(),
                PolicyRule::BootLoaderDigests,
            ),
        ] {
            if set {
                for pcr in BOOT_LOADER_PCRS {
                    add(pcr, rule);
                }
            }
        }
        for p in &self.pcrs {
            add(p.index, PolicyRule::Pcrs);
        }
        out
    }

    /// Parses and validates a TOML policy (unknown keys are errors).
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let p: Self = toml::from_str(text).map_err(|e| PolicyError::Toml(e.to_string()))?;
        p.validate()?;
        Ok(p)
    }

    /// Writes the policy as TOML.
    pub fn to_toml(&self) -> Result<String, PolicyError> {
        toml::to_string_pretty(self).map_err(|e| PolicyError::Serialize(e.to_string()))
    }

    /// Checks names, banks and digest lengths.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if self.name.trim().is_empty() {
            return Err(PolicyError::EmptyName);
        }
        if self.pcrs_read().is_empty() {
            return Err(PolicyError::NoRule(self.name.clone()));
        }
        let want = self
            .bank
            .known_size()
            .ok_or(PolicyError::UnknownBank(self.bank))?;
        let lists: [(&'static str, Option<&Vec<HexDigest>>, usize); 8] = [
            ("pk", self.pk.as_ref(), want),
            ("kek", self.kek.as_ref(), want),
            ("db", self.db.as_ref(), want),
            ("dbx_required", Some(&self.dbx_required), 32),
            ("boot_applications", self.boot_applications.as_ref(), want),
            (
                "kernel_cmdline_digests",
                self.kernel_cmdline_digests.as_ref(),
                want,
            ),
            ("initrds", self.initrds.as_ref(), want),
            (
                "boot_loader_digests",
                self.boot_loader_digests.as_ref(),
                want,
            ),
        ];
        for (field, list, want) in lists {
            for (position, d) in list.into_iter().flatten().enumerate() {
                if d.0.len() != want {
                    let bank = if field == "dbx_required" {
                        HashAlg::Sha256
                    } else {
                        self.bank
                    };
                    return Err(self.length_error(field, position, d.0.len(), bank, want));
                }
            }
        }
        for (position, p) in self.pcrs.iter().enumerate() {
            if p.index > 23 {
                return Err(PolicyError::PcrIndex {
                    policy: self.name.clone(),
                    position,
                    index: p.index,
                });
            }
            let want = p
                .bank
                .known_size()
                .ok_or(PolicyError::UnknownBank(p.bank))?;
            if p.value.0.len() != want {
                return Err(self.length_error("pcrs", position, p.value.0.len(), p.bank, want));
            }
        }
        Ok(())
    }

    fn length_error(
        &self,
        field: &'static str,
        position: usize,
        len: usize,
        bank: HashAlg,
        want: usize,
    ) -> PolicyError {
        PolicyError::DigestLength {
            policy: self.name.clone(),
            field,
            position,
            len,
            bank,
            want,
        }
    }
}
