//! JWT-SVID minting (ES256, signed in the HSM) per the SPIFFE JWT-SVID spec.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_hsm::Signer;
use rand::RngCore;
use serde::Serialize;

use super::{CaError, CertificateError, SigningError};

/// Audiences per token and bytes per audience: generous, but bounded.
pub(crate) const MAX_AUDIENCES: usize = 32;
pub(crate) const MAX_AUDIENCE_LEN: usize = 256;

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    kid: &'a str,
    typ: &'a str,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    aud: &'a [String],
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
}

/// A fresh key id: 32 random bytes, base64url.
pub(crate) fn new_key_id() -> String {
    let mut b = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

pub(crate) fn check_audience(audience: &[String]) -> Result<(), CaError> {
    if audience.is_empty() {
        return Err(CaError::InvalidRequest(
            "a JWT-SVID needs at least one audience".into(),
        ));
    }
    if audience.len() > MAX_AUDIENCES {
        return Err(CaError::InvalidRequest(format!(
            "{} audiences requested; the limit is {MAX_AUDIENCES}",
            audience.len()
        )));
    }
    for a in audience {
        if a.is_empty() || a.len() > MAX_AUDIENCE_LEN || a.chars().any(char::is_control) {
            return Err(CaError::InvalidRequest(format!(
                "audience {a:?} must be 1..={MAX_AUDIENCE_LEN} bytes without control characters"
            )));
        }
    }
    Ok(())
}

/// Builds and signs a JWT-SVID. The signature (raw r||s) comes from the token.
pub(crate) fn mint(
    signer: &Signer,
    key_id: &str,
    spiffe_id: &SpiffeId,
    audience: &[String],
    issued_at: i64,
    expires_at: i64,
    issuer: Option<&str>,
) -> Result<String, CaError> {
    check_audience(audience)?;
    let header = Header {
        alg: "ES256",
        kid: key_id,
        typ: "JWT",
    };
    let claims = Claims {
        sub: spiffe_id.to_string(),
        aud: audience,
        exp: expires_at,
        iat: issued_at,
        iss: issuer,
    };
    let h = serde_json::to_vec(&header).map_err(CertificateError::JwtEncoding)?;
    let c = serde_json::to_vec(&claims).map_err(CertificateError::JwtEncoding)?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(h),
        URL_SAFE_NO_PAD.encode(c)
    );
    let sig = signer
        .sign_jws(signing_input.as_bytes())
        .map_err(|source| SigningError::Jwt {
            label: signer.label().to_string(),
            source,
        })?;
    Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}
