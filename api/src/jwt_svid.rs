//! JWT-SVIDs (SPIFFE JWT-SVID spec): verification against a trust bundle, and
//! the encoding helpers the server uses to build the token it signs.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use serde_json::{json, Map, Value};

use crate::bundle::TrustBundle;
use crate::pubkey::{KeyAlg, PublicKey};
use crate::spiffe_id::SpiffeId;

/// Longest token accepted, in bytes: well above any real JWT-SVID, small
/// enough that a hostile token costs little to reject.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The signature algorithms accepted (a subset of JWT-SVID §2.1 that `ring`
/// verifies and ironroot issues or expects from peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// ECDSA P-256 with SHA-256 (what ironroot issues).
    Es256,
    /// ECDSA P-384 with SHA-384.
    Es384,
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PSS with SHA-256.
    Ps256,
}

impl JwtAlgorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::Es384 => "ES384",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Rs384 => "RS384",
            JwtAlgorithm::Ps256 => "PS256",
        }
    }

    /// The algorithm named `alg` (case-sensitive), if it is accepted.
    pub fn from_name(alg: &str) -> Option<Self> {
        [
            JwtAlgorithm::Es256,
            JwtAlgorithm::Es384,
            JwtAlgorithm::Rs256,
            JwtAlgorithm::Rs384,
            JwtAlgorithm::Ps256,
        ]
        .into_iter()
        .find(|a| a.as_str() == alg)
    }

    /// The ring verifier, if the key is of the kind this algorithm needs.
    fn verifier(self, key: KeyAlg) -> Option<&'static dyn VerificationAlgorithm> {
        Some(match (self, key) {
            (JwtAlgorithm::Es256, KeyAlg::EcP256) => &signature::ECDSA_P256_SHA256_FIXED,
            (JwtAlgorithm::Es384, KeyAlg::EcP384) => &signature::ECDSA_P384_SHA384_FIXED,
            (JwtAlgorithm::Rs256, KeyAlg::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA256,
            (JwtAlgorithm::Rs384, KeyAlg::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA384,
            (JwtAlgorithm::Ps256, KeyAlg::Rsa) => &signature::RSA_PSS_2048_8192_SHA256,
            _ => return None,
        })
    }
}

/// The JOSE header of a JWT-SVID; the spec allows no other parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtHeader {
    /// `alg`.
    pub alg: JwtAlgorithm,
    /// `kid`: the bundle's JWT authority that signs.
    pub kid: String,
    /// `typ`: `JWT` or `JOSE` when set.
    pub typ: Option<String>,
}

/// The claims of a JWT-SVID that ironroot reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSvidClaims {
    /// `sub`: the workload's SPIFFE ID.
    pub sub: SpiffeId,
    /// `aud`: one or more audiences.
    pub aud: Vec<String>,
    /// `exp`: unix seconds.
    pub exp: i64,
    /// `iat`: unix seconds.
    pub iat: Option<i64>,
}

/// Which check a JWT-SVID failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtSvidError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three `.`-separated base64url parts of valid JSON objects.
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// `alg` is missing or not a string.
    #[error("header has no 'alg'")]
    MissingAlgorithm,
    /// `alg` is `none`, HMAC, or anything else not accepted.
    #[error("header 'alg' is '{alg}'; only ES256, ES384, RS256, RS384 and PS256 are accepted")]
    UnsupportedAlgorithm {
        /// The algorithm named.
        alg: String,
    },
    /// A header parameter other than `alg`, `kid`, `typ` (JWT-SVID §2).
    #[error("header parameter '{name}' is not allowed in a JWT-SVID")]
    UnexpectedHeader {
        /// The parameter's name.
        name: String,
    },
    /// `typ` is set to something other than `JWT` or `JOSE`.
    #[error("header 'typ' is '{typ}'; it must be 'JWT' or 'JOSE'")]
    BadType {
        /// The type given.
        typ: String,
    },
    /// No `kid`, so no way to pick the key.
    #[error("header has no 'kid'")]
    MissingKeyId,
    /// `kid` is not a JWT authority of the bundle.
    #[error("unknown kid '{kid}': not a JWT authority of trust domain '{trust_domain}'")]
    UnknownKeyId {
        /// The key id.
        kid: String,
        /// The bundle's trust domain.
        trust_domain: String,
    },
    /// The bundle's key cannot be parsed.
    #[error("JWT authority '{kid}' has an unusable key: {reason}")]
    BadKey {
        /// The key id.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The key named by `kid` is not of the kind `alg` needs.
    #[error("key '{kid}' cannot verify '{alg}' signatures (wrong key type or curve)")]
    AlgorithmKeyMismatch {
        /// The key id.
        kid: String,
        /// The algorithm named.
        alg: &'static str,
    },
    /// The signature does not verify.
    #[error("bad signature: it does not verify with key '{kid}'")]
    BadSignature {
        /// The key id.
        kid: String,
    },
    /// A required claim is absent.
    #[error("claim '{claim}' is missing")]
    MissingClaim {
        /// The claim's name.
        claim: &'static str,
    },
    /// A claim has the wrong type or value.
    #[error("claim '{claim}' is invalid: {reason}")]
    InvalidClaim {
        /// The claim's name.
        claim: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// `sub` is in another trust domain than the bundle.
    #[error("subject '{sub}' is not in trust domain '{trust_domain}'")]
    ForeignSubject {
        /// The subject.
        sub: String,
        /// The bundle's trust domain.
        trust_domain: String,
    },
    /// The expected audience is not among `aud`.
    #[error("audience '{expected}' not in [{}]", quote_list(.actual))]
    AudienceMismatch {
        /// The audience asked for.
        expected: String,
        /// The token's audiences.
        actual: Vec<String>,
    },
    /// `now >= exp`.
    #[error("token expired at {exp} (now {now})")]
    Expired {
        /// The expiry, unix seconds.
        exp: i64,
        /// The time of the check, unix seconds.
        now: i64,
    },
    /// `now < nbf`.
    #[error("token is not valid before {nbf} (now {now})")]
    NotYetValid {
        /// The not-before time, unix seconds.
        nbf: i64,
        /// The time of the check, unix seconds.
        now: i64,
    },
}

fn quote_list(v: &[String]) -> String {
    v.iter()
        .map(|s| format!("'{s}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Verifies a JWT-SVID against `bundle` for `audience` at `now_unix`.
///
/// Order: size, structure, header (`alg` before anything else, JWT-SVID §4),
/// key, signature, then claims, so no claim is trusted before the signature is.
pub fn verify_jwt_svid(
    token: &str,
    bundle: &TrustBundle,
    audience: &str,
    now_unix: i64,
) -> Result<JwtSvidClaims, JwtSvidError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtSvidError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let mut parts = token.split('.');
    let (Some(h64), Some(c64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "a JWS compact token has exactly three '.'-separated parts",
        ));
    };
    let header = parse_header(&decode_object(h64, "header")?)?;

    let authority =
        bundle
            .jwt_authority(&header.kid)
            .ok_or_else(|| JwtSvidError::UnknownKeyId {
                kid: header.kid.clone(),
                trust_domain: bundle.trust_domain.to_string(),
            })?;
    let key = PublicKey::from_spki_der(&authority.public_key_der).map_err(|reason| {
        JwtSvidError::BadKey {
            kid: header.kid.clone(),
            reason,
        }
    })?;
    let verifier =
        header
            .alg
            .verifier(key.alg)
            .ok_or_else(|| JwtSvidError::AlgorithmKeyMismatch {
                kid: header.kid.clone(),
                alg: header.alg.as_str(),
            })?;
    let sig = URL_SAFE_NO_PAD
        .decode(s64)
        .map_err(|_| malformed("signature is not unpadded base64url"))?;
    // The signing input is the encoded header and claims exactly as received.
    let signing_input = &token[..h64.len() + 1 + c64.len()];
    UnparsedPublicKey::new(verifier, &key.raw)
        .verify(signing_input.as_bytes(), &sig)
        .map_err(|_| JwtSvidError::BadSignature {
            kid: header.kid.clone(),
        })?;

    let claims = decode_object(c64, "claims")?;
    check_claims(&claims, bundle, audience, now_unix)
}

/// The trust domain named by a token's `sub`, read WITHOUT checking the
/// signature: only to pick which bundle to verify the token against.
pub fn unverified_trust_domain(token: &str) -> Result<String, JwtSvidError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtSvidError::TooLong {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let c64 = token
        .split('.')
        .nth(1)
        .ok_or_else(|| malformed("a JWS compact token has exactly three '.'-separated parts"))?;
    let claims = decode_object(c64, "claims")?;
    let sub = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .ok_or_else(|| malformed("the claims have no string 'sub'"))?;
    let id = SpiffeId::parse(sub).map_err(|e| malformed(&format!("sub: {e}")))?;
    Ok(id.trust_domain().to_string())
}

/// The `BASE64URL(header).BASE64URL(claims)` string the server signs.
pub fn jwt_signing_input(header: &JwtHeader, claims: &JwtSvidClaims) -> String {
    let mut h = Map::new();
    h.insert("alg".into(), header.alg.as_str().into());
    h.insert("kid".into(), header.kid.clone().into());
    if let Some(typ) = &header.typ {
        h.insert("typ".into(), typ.clone().into());
    }
    // A single audience is written as a string, the form most verifiers expect.
    let aud = match claims.aud.as_slice() {
        [one] => json!(one),
        many => json!(many),
    };
    let mut c = Map::new();
    c.insert("sub".into(), claims.sub.to_string().into());
    c.insert("aud".into(), aud);
    c.insert("exp".into(), claims.exp.into());
    if let Some(iat) = claims.iat {
        c.insert("iat".into(), iat.into());
    }
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(Value::Object(h).to_string()),
        URL_SAFE_NO_PAD.encode(Value::Object(c).to_string())
    )
}

/// Appends the signature to the signing input. For ES256/ES384 the signature
/// must be the fixed-size `r || s` form (as PKCS#11 `CKM_ECDSA` returns), not DER.
pub fn assemble_jwt(signing_input: &str, signature: &[u8]) -> String {
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

fn malformed(what: &str) -> JwtSvidError {
    JwtSvidError::Malformed(what.to_owned())
}

fn decode_object(b64: &str, what: &str) -> Result<Map<String, Value>, JwtSvidError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .map_err(|_| JwtSvidError::Malformed(format!("{what} is not unpadded base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(JwtSvidError::Malformed(format!(
            "{what} is not a JSON object"
        ))),
        Err(e) => Err(JwtSvidError::Malformed(format!("{what} is not JSON: {e}"))),
    }
}

fn parse_header(h: &Map<String, Value>) -> Result<JwtHeader, JwtSvidError> {
    let alg_name = h
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtSvidError::MissingAlgorithm)?;
    let alg =
        JwtAlgorithm::from_name(alg_name).ok_or_else(|| JwtSvidError::UnsupportedAlgorithm {
            alg: alg_name.chars().take(32).collect(),
        })?;
    if let Some(name) = h
        .keys()
        .find(|k| !matches!(k.as_str(), "alg" | "kid" | "typ"))
    {
        return Err(JwtSvidError::UnexpectedHeader {
            name: name.chars().take(64).collect(),
        });
    }
    let typ = match h.get("typ") {
        None => None,
        Some(Value::String(t)) if t == "JWT" || t == "JOSE" => Some(t.clone()),
        Some(other) => {
            return Err(JwtSvidError::BadType {
                typ: other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_owned),
            })
        }
    };
    let kid = match h.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(JwtSvidError::MissingKeyId),
    };
    Ok(JwtHeader { alg, kid, typ })
}

fn check_claims(
    c: &Map<String, Value>,
    bundle: &TrustBundle,
    audience: &str,
    now: i64,
) -> Result<JwtSvidClaims, JwtSvidError> {
    let invalid = |claim, reason: &str| JwtSvidError::InvalidClaim {
        claim,
        reason: reason.to_owned(),
    };
    let sub = match c.get("sub") {
        None => return Err(JwtSvidError::MissingClaim { claim: "sub" }),
        Some(Value::String(s)) => {
            SpiffeId::parse(s).map_err(|e| invalid("sub", &format!("not a SPIFFE ID: {e}")))?
        }
        Some(_) => return Err(invalid("sub", "not a string")),
    };
    if !sub.is_member_of(&bundle.trust_domain) {
        return Err(JwtSvidError::ForeignSubject {
            sub: sub.to_string(),
            trust_domain: bundle.trust_domain.to_string(),
        });
    }
    let aud = match c.get("aud") {
        None => return Err(JwtSvidError::MissingClaim { claim: "aud" }),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(v)) => v
            .iter()
            .map(|a| a.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| invalid("aud", "an array element is not a string"))?,
        Some(_) => return Err(invalid("aud", "not a string or an array of strings")),
    };
    if aud.is_empty() {
        return Err(invalid("aud", "it has no values"));
    }
    if !aud.iter().any(|a| a == audience) {
        return Err(JwtSvidError::AudienceMismatch {
            expected: audience.to_owned(),
            actual: aud,
        });
    }
    let exp =
        numeric_date(c, "exp", f64::ceil)?.ok_or(JwtSvidError::MissingClaim { claim: "exp" })?;
    if now >= exp {
        return Err(JwtSvidError::Expired { exp, now });
    }
    // Not a JWT-SVID rule, but RFC 7519 §4.1.5 says not to accept before nbf.
    if let Some(nbf) = numeric_date(c, "nbf", f64::ceil)? {
        if now < nbf {
            return Err(JwtSvidError::NotYetValid { nbf, now });
        }
    }
    let iat = numeric_date(c, "iat", f64::floor)?;
    Ok(JwtSvidClaims { sub, aud, exp, iat })
}

/// An RFC 7519 NumericDate, which may be fractional. `round` picks the
/// integer that keeps integer comparisons with `now` exact (ceil for exp/nbf).
fn numeric_date(
    c: &Map<String, Value>,
    claim: &'static str,
    round: fn(f64) -> f64,
) -> Result<Option<i64>, JwtSvidError> {
    let Some(v) = c.get(claim) else {
        return Ok(None);
    };
    if let Some(i) = v.as_i64() {
        return Ok(Some(i));
    }
    match v.as_f64().map(round) {
        // Within ±2^53 the conversion is exact.
        Some(f) if f.is_finite() && f.abs() <= 9_007_199_254_740_992.0 => Ok(Some(f as i64)),
        _ => Err(JwtSvidError::InvalidClaim {
            claim,
            reason: "not a number of seconds in range".into(),
        }),
    }
}

#[cfg(test)]
mod tests;
