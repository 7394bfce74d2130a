//! `ironroot-agent api …`: a Workload API client for operators and scripts.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use ironroot_api::workload::{self as pb, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::refused::Refused;

/// Why a Workload API call gave no answer to use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The socket could not be connected to (no agent listening, or no permission).
    #[error("cannot connect to the Workload API at {}", socket.display())]
    Connect {
        /// The Workload API socket tried.
        socket: PathBuf,
        /// The transport's reason.
        #[source]
        source: tonic::transport::Error,
    },
    /// The agent answered the call with a status.
    #[error("{call}: {refused}")]
    Refused {
        /// The RPC, as the SPIFFE spec names it (`FetchX509SVID`).
        call: &'static str,
        /// The gRPC status the agent answered with.
        refused: Refused,
    },
    /// A streaming call closed before its first message; names what was awaited.
    #[error("the stream ended without {0}")]
    StreamEnded(&'static str),
    /// The response carries DER that does not parse (bundles, keys).
    #[error("bad response: {0}")]
    BadResponse(der::Error),
    /// A certificate in the response does not parse as DER X.509.
    #[error("bad certificate in response: {0}")]
    BadCertificate(der::Error),
    /// An X.509-SVID response without any SVID (nothing to write).
    #[error("no SVID in the response")]
    NoSvid,
    /// A file could not be written by [`write_x509`].
    #[error("cannot write {}", path.display())]
    Write {
        /// The file (or directory) being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Connects to the Workload API socket.
pub async fn connect(socket: &Path) -> Result<SpiffeWorkloadApiClient<Channel>, ClientError> {
    let path: PathBuf = socket.to_owned();
    let failed = |source| ClientError::Connect {
        socket: socket.to_owned(),
        source,
    };
    let channel = Endpoint::try_from("http://workload.api")
        .map_err(failed)?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .map_err(failed)?;
    Ok(SpiffeWorkloadApiClient::new(channel))
}

/// A request with the header every Workload API call must carry.
pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut().insert(
        "workload.spiffe.io",
        tonic::metadata::MetadataValue::from_static("true"),
    );
    r
}

fn status(call: &'static str, s: tonic::Status) -> ClientError {
    ClientError::Refused {
        call,
        refused: s.into(),
    }
}

/// DER certificates concatenated (the Workload API's form) -> PEM.
pub fn concat_der_to_pem(der: &[u8]) -> Result<String, ClientError> {
    use der::{Decode, Reader};
    let mut out = String::new();
    let mut rest = der;
    while !rest.is_empty() {
        let mut reader = der::SliceReader::new(rest).map_err(ClientError::BadResponse)?;
        x509_cert::Certificate::decode(&mut reader).map_err(ClientError::BadCertificate)?;
        let len = u32::from(reader.position()) as usize;
        let (cert, tail) = rest.split_at(len.min(rest.len()));
        out.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
        rest = tail;
    }
    Ok(out)
}

/// The first X.509-SVID response.
pub async fn fetch_x509(socket: &Path) -> Result<pb::X509svidResponse, ClientError> {
    let mut c = connect(socket).await?;
    let mut stream = c
        .fetch_x509svid(request(pb::X509svidRequest {}))
        .await
        .map_err(|s| status("FetchX509SVID", s))?
        .into_inner();
    stream
        .message()
        .await
        .map_err(|s| status("FetchX509SVID", s))?
        .ok_or(ClientError::StreamEnded("an SVID"))
}

/// Writes svid.pem, svid.key and bundle.pem of the first SVID into `dir`.
pub fn write_x509(resp: &pb::X509svidResponse, dir: &Path) -> Result<(), ClientError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let svid = resp.svids.first().ok_or(ClientError::NoSvid)?;
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |source| ClientError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(failed(dir))?;
    let (svid_path, bundle_path) = (dir.join("svid.pem"), dir.join("bundle.pem"));
    std::fs::write(&svid_path, concat_der_to_pem(&svid.x509_svid)?).map_err(failed(&svid_path))?;
    std::fs::write(&bundle_path, concat_der_to_pem(&svid.bundle)?).map_err(failed(&bundle_path))?;
    let key_path = dir.join("svid.key");
    let _ = std::fs::remove_file(&key_path);
    let key = pem::encode(&pem::Pem::new("PRIVATE KEY", svid.x509_svid_key.clone()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut f| f.write_all(key.as_bytes()))
        .map_err(failed(&key_path))
}

/// FetchJWTSVID for `audience` (non-empty, as the spec requires): one JWT-SVID per identity the
/// caller has, or only `spiffe_id`'s when it is not empty.
pub async fn fetch_jwt(
    socket: &Path,
    audience: Vec<String>,
    spiffe_id: String,
) -> Result<pb::JwtsvidResponse, ClientError> {
    let mut c = connect(socket).await?;
    Ok(c.fetch_jwtsvid(request(pb::JwtsvidRequest {
        audience,
        spiffe_id,
    }))
    .await
    .map_err(|s| status("FetchJWTSVID", s))?
    .into_inner())
}

/// The first message of FetchJWTBundles: every trust domain's JWT keys as JWKS documents.
pub async fn fetch_jwt_bundles(socket: &Path) -> Result<pb::JwtBundlesResponse, ClientError> {
    let mut c = connect(socket).await?;
    let mut stream = c
        .fetch_jwt_bundles(request(pb::JwtBundlesRequest {}))
        .await
        .map_err(|s| status("FetchJWTBundles", s))?
        .into_inner();
    stream
        .message()
        .await
        .map_err(|s| status("FetchJWTBundles", s))?
        .ok_or(ClientError::StreamEnded("bundles"))
}

/// ValidateJWTSVID: the agent checks `svid` (a compact JWS) against its bundles and `audience`;
/// a refusal (`InvalidArgument`) comes back as [`ClientError::Refused`].
pub async fn validate_jwt(
    socket: &Path,
    audience: String,
    svid: String,
) -> Result<pb::ValidateJwtsvidResponse, ClientError> {
    let mut c = connect(socket).await?;
    Ok(
        c.validate_jwtsvid(request(pb::ValidateJwtsvidRequest { audience, svid }))
            .await
            .map_err(|s| status("ValidateJWTSVID", s))?
            .into_inner(),
    )
}
