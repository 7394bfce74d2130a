//! The options of the cloud node attestors (`[aws_iid]`, `[gcp_iit]`, `[azure_msi]`,
//! `[azure_imds]`),
//! SPIRE's names where SPIRE has them. Parsed in every build (so a config file is checked
//! the same way everywhere); the attestors themselves need the `cloud` cargo feature.

use std::time::Duration;

use serde::Deserialize;

/// AWS's instance metadata service (IMDS).
pub const DEFAULT_AWS_METADATA_ENDPOINT: &str = "http://169.254.169.254";
/// Google's metadata server.
pub const DEFAULT_GCP_IDENTITY_TOKEN_HOST: &str = "metadata.google.internal";
/// Azure's instance metadata service (IMDS).
pub const DEFAULT_AZURE_METADATA_ENDPOINT: &str = "http://169.254.169.254";
/// The timeout of each metadata request (connect, send, receive).
pub const DEFAULT_METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// `[aws_iid]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsIidAgentConfig {
    /// The IMDS base URL (`http://host[:port]`; a trailing `/latest` as in SPIRE's examples
    /// is accepted): IMDSv2 token from `PUT /latest/api/token`, then the document, its
    /// signature and its rsa2048 PKCS#7 from `/latest/dynamic/instance-identity/…`.
    pub ec2_metadata_endpoint: String,
    /// Timeout of each request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AwsIidAgentConfig {
    fn default() -> Self {
        AwsIidAgentConfig {
            ec2_metadata_endpoint: DEFAULT_AWS_METADATA_ENDPOINT.into(),
            timeout: DEFAULT_METADATA_TIMEOUT,
        }
    }
}

/// `[gcp_iit]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcpIitAgentConfig {
    /// The metadata server's host (`host[:port]`, plain HTTP as SPIRE).
    pub identity_token_host: String,
    /// The service account whose identity token is requested.
    pub service_account: String,
    /// The token's audience (the server's `[node_attestors.gcp_iit] audience`).
    pub audience: String,
    /// Timeout of the request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for GcpIitAgentConfig {
    fn default() -> Self {
        GcpIitAgentConfig {
            identity_token_host: DEFAULT_GCP_IDENTITY_TOKEN_HOST.into(),
            service_account: "default".into(),
            audience: "spire-gcp-node-attestor".into(),
            timeout: DEFAULT_METADATA_TIMEOUT,
        }
    }
}

/// `[azure_msi]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureMsiAgentConfig {
    /// The resource the access token is requested for (the server's tenant `resource_id`).
    pub resource_id: String,
    /// The IMDS base URL (`http://host[:port]`).
    pub metadata_endpoint: String,
    /// Timeout of the request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

/// `[azure_imds]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AzureImdsAgentConfig {
    /// The tenant's domain (SPIRE's `tenant_domain`), a key of the server's
    /// `[node_attestors.azure_imds.tenants]`. Required with `node_attestor = "azure_imds"`.
    pub tenant_domain: String,
    /// The IMDS base URL (`http://host[:port]`).
    pub metadata_endpoint: String,
    /// Timeout of each request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for AzureImdsAgentConfig {
    fn default() -> Self {
        AzureImdsAgentConfig {
            tenant_domain: String::new(),
            metadata_endpoint: DEFAULT_AZURE_METADATA_ENDPOINT.into(),
            timeout: DEFAULT_METADATA_TIMEOUT,
        }
    }
}

impl Default for AzureMsiAgentConfig {
    fn default() -> Self {
        AzureMsiAgentConfig {
            resource_id: "https://management.azure.com/".into(),
            metadata_endpoint: DEFAULT_AZURE_METADATA_ENDPOINT.into(),
            timeout: DEFAULT_METADATA_TIMEOUT,
        }
    }
}
