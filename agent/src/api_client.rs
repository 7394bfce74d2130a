//! `ironroot-agent api …`: a Workload API client for operators and scripts.

use std::path::{Path, PathBuf};

use anyhow::Context;
use hyper_util::rt::TokioIo;
use ironroot_api::workload::{self as pb, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to the Workload API socket.
pub async fn connect(socket: &Path) -> anyhow::Result<SpiffeWorkloadApiClient<Channel>> {
    let path: PathBuf = socket.to_owned();
    let channel = Endpoint::try_from("http://workload.api")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .with_context(|| format!("cannot connect to the Workload API at {}", socket.display()))?;
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

fn status(what: &str, s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{what}: {} ({:?})", s.message(), s.code())
}

/// DER certificates concatenated (the Workload API's form) -> PEM.
pub fn concat_der_to_pem(der: &[u8]) -> anyhow::Result<String> {
    use der::{Decode, Reader};
    let mut out = String::new();
    let mut rest = der;
    while !rest.is_empty() {
        let mut reader =
            der::SliceReader::new(rest).map_err(|e| anyhow::anyhow!("bad response: {e}"))?;
        x509_cert::Certificate::decode(&mut reader)
            .map_err(|e| anyhow::anyhow!("bad certificate in response: {e}"))?;
        let len = u32::from(reader.position()) as usize;
        let (cert, tail) = rest.split_at(len.min(rest.len()));
        out.push_str(&pem::encode(&pem::Pem::new("CERTIFICATE", cert.to_vec())));
        rest = tail;
    }
    Ok(out)
}

/// The first X.509-SVID response.
pub async fn fetch_x509(socket: &Path) -> anyhow::Result<pb::X509svidResponse> {
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
        .context("the stream ended without an SVID")
}

/// Writes svid.pem, svid.key and bundle.pem of the first SVID into `dir`.
pub fn write_x509(resp: &pb::X509svidResponse, dir: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let svid = resp.svids.first().context("no SVID in the response")?;
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("svid.pem"), concat_der_to_pem(&svid.x509_svid)?)?;
    std::fs::write(dir.join("bundle.pem"), concat_der_to_pem(&svid.bundle)?)?;
    let key_path = dir.join("svid.key");
    let _ = std::fs::remove_file(&key_path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)?;
    f.write_all(pem::encode(&pem::Pem::new("PRIVATE KEY", svid.x509_svid_key.clone())).as_bytes())?;
    Ok(())
}

pub async fn fetch_jwt(
    socket: &Path,
    audience: Vec<String>,
    spiffe_id: String,
) -> anyhow::Result<pb::JwtsvidResponse> {
    let mut c = connect(socket).await?;
    Ok(c.fetch_jwtsvid(request(pb::JwtsvidRequest {
        audience,
        spiffe_id,
    }))
    .await
    .map_err(|s| status("FetchJWTSVID", s))?
    .into_inner())
}

pub async fn fetch_jwt_bundles(socket: &Path) -> anyhow::Result<pb::JwtBundlesResponse> {
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
        .context("the stream ended without bundles")
}

pub async fn validate_jwt(
    socket: &Path,
    audience: String,
    svid: String,
) -> anyhow::Result<pb::ValidateJwtsvidResponse> {
    let mut c = connect(socket).await?;
    Ok(
        c.validate_jwtsvid(request(pb::ValidateJwtsvidRequest { audience, svid }))
            .await
            .map_err(|s| status("ValidateJWTSVID", s))?
            .into_inner(),
    )
}
