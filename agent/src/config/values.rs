//! The typed values of the agent's config: parsed when the file is loaded, so a
//! misspelt value is refused at startup, naming the key.

use std::fmt;

use ironroot_tpm::device::EkAlgorithm;
use serde::{Deserialize, Deserializer};

/// `node_attestor`: how the agent proves what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum NodeAttestorKind {
    /// The TPM's endorsement key.
    #[default]
    #[serde(rename = "tpm_ek")]
    TpmEk,
    /// A DevID certificate for a TPM-resident key.
    #[serde(rename = "tpm_devid")]
    TpmDevId,
    /// A single-use token from `ironroot-server token generate`.
    #[serde(rename = "join_token")]
    JoinToken,
    /// An AWS instance identity document (`[aws_iid]`; `cloud` cargo feature).
    #[serde(rename = "aws_iid")]
    AwsIid,
    /// A GCE instance identity token (`[gcp_iit]`; `cloud` cargo feature).
    #[serde(rename = "gcp_iit")]
    GcpIit,
    /// An Azure managed-identity token (`[azure_msi]`; `cloud` cargo feature).
    #[serde(rename = "azure_msi")]
    AzureMsi,
    /// Azure IMDS attested data over the server's nonce (`[azure_imds]`; `cloud` cargo
    /// feature).
    #[serde(rename = "azure_imds")]
    AzureImds,
    /// A Kubernetes projected service-account token (`[k8s_psat]`; cargo feature `k8s`).
    #[serde(rename = "k8s_psat")]
    K8sPsat,
}

impl NodeAttestorKind {
    /// The name in the config and on the wire (`AttestParams.attestor`).
    pub fn name(self) -> &'static str {
        match self {
            NodeAttestorKind::TpmEk => "tpm_ek",
            NodeAttestorKind::TpmDevId => "tpm_devid",
            NodeAttestorKind::JoinToken => "join_token",
            NodeAttestorKind::AwsIid => "aws_iid",
            NodeAttestorKind::GcpIit => "gcp_iit",
            NodeAttestorKind::AzureMsi => "azure_msi",
            NodeAttestorKind::AzureImds => "azure_imds",
            NodeAttestorKind::K8sPsat => "k8s_psat",
        }
    }

    /// Whether the attestor sends TPM evidence. The others attest once (a join token is
    /// single use; the server trusts a cloud identity on first use) and renew their SVID over
    /// mTLS.
    pub fn uses_tpm(self) -> bool {
        matches!(self, NodeAttestorKind::TpmEk | NodeAttestorKind::TpmDevId)
    }

    /// The cargo feature the attestor is built under, if any.
    pub fn feature(self) -> Option<&'static str> {
        match self {
            NodeAttestorKind::AwsIid
            | NodeAttestorKind::GcpIit
            | NodeAttestorKind::AzureMsi
            | NodeAttestorKind::AzureImds => Some("cloud"),
            NodeAttestorKind::K8sPsat => Some("k8s"),
            _ => None,
        }
    }
}

impl fmt::Display for NodeAttestorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `tpm.ek`: which endorsement key the agent uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum EkType {
    /// RSA-2048 (every TPM 2.0 has it).
    #[default]
    #[serde(rename = "rsa")]
    Rsa,
    /// ECC NIST P-256.
    #[serde(rename = "ecc")]
    Ecc,
    /// ECC NIST P-384.
    #[serde(rename = "ecc-p384")]
    EccP384,
}

impl EkType {
    /// The name in the config.
    pub fn name(self) -> &'static str {
        match self {
            EkType::Rsa => "rsa",
            EkType::Ecc => "ecc",
            EkType::EccP384 => "ecc-p384",
        }
    }

    /// The TCG EK template it names.
    pub fn algorithm(self) -> EkAlgorithm {
        match self {
            EkType::Rsa => EkAlgorithm::Rsa2048,
            EkType::Ecc => EkAlgorithm::EccP256,
            EkType::EccP384 => EkAlgorithm::EccP384,
        }
    }
}

impl fmt::Display for EkType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not an [`EkType`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tpm.ek {0:?} is not one of rsa, ecc, ecc-p384")]
pub struct UnknownEkType(pub String);

impl std::str::FromStr for EkType {
    type Err = UnknownEkType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rsa" => Ok(EkType::Rsa),
            "ecc" => Ok(EkType::Ecc),
            "ecc-p384" => Ok(EkType::EccP384),
            other => Err(UnknownEkType(other.to_owned())),
        }
    }
}

/// A socket's file mode, written as an octal string (`"0666"`, `"0o660"`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(u32);

impl SocketMode {
    /// `bits` must be at most 0o777.
    pub const fn new(bits: u32) -> Self {
        SocketMode(bits & 0o777)
    }

    /// The permission bits.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl fmt::Debug for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SocketMode({:#o})", self.0)
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// Why a string is not a [`SocketMode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("socket mode {0:?} is not an octal mode of at most 0777")]
pub struct BadSocketMode(pub String);

impl std::str::FromStr for SocketMode {
    type Err = BadSocketMode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        u32::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .map(SocketMode)
            .ok_or_else(|| BadSocketMode(s.to_owned()))
    }
}

impl<'de> Deserialize<'de> for SocketMode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// `server_address` (or an item of `server_addresses`): a server's Node API as `host:port`
/// (a name, an IPv4 address, or a bracketed IPv6 address). Dereferences to the string as
/// written.
#[derive(Clone, PartialEq, Eq)]
pub struct ServerAddress(String);

/// Why a string is not a [`ServerAddress`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("server address {0:?} is not host:port")]
pub struct BadServerAddress(pub String);

impl std::str::FromStr for ServerAddress {
    type Err = BadServerAddress;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadServerAddress(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host_ok = !host.is_empty()
            && !host.contains(['/', ' ', '@'])
            && (host.starts_with('[') == host.ends_with(']'));
        if !host_ok || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(bad());
        }
        Ok(ServerAddress(s.to_owned()))
    }
}

impl std::ops::Deref for ServerAddress {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerAddress({:?})", self.0)
    }
}

impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ServerAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses_are_host_and_port() {
        for ok in ["127.0.0.1:8081", "ironroot.example.org:443", "[::1]:8081"] {
            assert_eq!(&*ok.parse::<ServerAddress>().unwrap(), ok);
        }
        for bad in [
            "",
            "8081",
            "host",
            ":8081",
            "host:",
            "host:0",
            "host:65536",
            "a/b:1",
        ] {
            assert!(bad.parse::<ServerAddress>().is_err(), "{bad}");
        }
    }

    #[test]
    fn socket_modes_are_octal_strings() {
        assert_eq!("0666".parse::<SocketMode>().unwrap().bits(), 0o666);
        assert_eq!("0o660".parse::<SocketMode>().unwrap().bits(), 0o660);
        assert_eq!("0666".parse::<SocketMode>().unwrap().to_string(), "0666");
        assert!("0999".parse::<SocketMode>().is_err());
        assert!("1777".parse::<SocketMode>().is_err());
        assert!("rw-rw-rw-".parse::<SocketMode>().is_err());
    }

    #[test]
    fn ek_types_keep_their_config_names() {
        for t in [EkType::Rsa, EkType::Ecc, EkType::EccP384] {
            assert_eq!(t.name().parse::<EkType>().unwrap(), t);
        }
        assert_eq!(
            "ecc-p521".parse::<EkType>().unwrap_err().to_string(),
            "tpm.ek \"ecc-p521\" is not one of rsa, ecc, ecc-p384"
        );
    }
}
