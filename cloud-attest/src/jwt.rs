//! RS256 JSON Web Tokens (compact JWS): key sets, signature, and the registered claims.
//!
//! Only RS256 is accepted (what Google and Azure sign identity tokens with); the header's
//! `kid` must name a key of the configured set. Claims are returned as JSON for the
//! verifier of each token kind to read.

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

/// Tokens longer than this are refused before decoding (identity tokens are ~1-2 KiB).
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Why a token's encoding, header or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token is {len} bytes, more than the {MAX_TOKEN_LEN} accepted")]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Not three base64url parts, or a part is not the JSON it must be.
    #[error("token is malformed: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// The header names an algorithm other than RS256 (including `none`).
    #[error("token algorithm {found:?} is not accepted: only RS256 is")]
    UnsupportedAlgorithm {
        /// The `alg` found.
        found: String,
    },
    /// The header has no `kid`.
    #[error("token header has no key ID (kid)")]
    MissingKeyId,
    /// No key of the configured set has the header's `kid`.
    #[error("token key ID {kid:?} is not in the configured key set (wrong signer, or the key set is stale)")]
    UnknownKeyId {
        /// The `kid` found.
        kid: String,
    },
    /// The signature does not verify with the key the `kid` names.
    #[error("token signature does not verify with key {kid:?}: wrong signer or altered token")]
    BadSignature {
        /// The key used.
        kid: String,
    },
}

/// Why a token's registered claims (time, audience, issuer) were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimError {
    /// A claim the verifier requires is absent or not of the right JSON type.
    #[error("token claim {claim:?} is missing or not {expected}")]
    Missing {
        /// Claim name.
        claim: &'static str,
        /// Its JSON type.
        expected: &'static str,
    },
    /// `exp` (plus the allowed clock skew) is in the past.
    #[error("token expired at {expired_at} (now {now}, clock skew allowed {skew_secs} s)")]
    Expired {
        /// `exp`, seconds since the Unix epoch.
        expired_at: i64,
        /// The caller's now.
        now: i64,
        /// Allowed skew.
        skew_secs: u64,
    },
    /// `nbf` (minus the skew) is in the future.
    #[error(
        "token is not valid before {not_before} (now {now}, clock skew allowed {skew_secs} s)"
    )]
    NotYetValid {
        /// `nbf`.
        not_before: i64,
        /// The caller's now.
        now: i64,
        /// Allowed skew.
        skew_secs: u64,
    },
    /// `iat` (minus the skew) is in the future.
    #[error("token was issued in the future at {issued_at} (now {now}, clock skew allowed {skew_secs} s)")]
    IssuedInFuture {
        /// `iat`.
        issued_at: i64,
        /// The caller's now.
        now: i64,
        /// Allowed skew.
        skew_secs: u64,
    },
    /// `aud` does not contain the configured audience.
    #[error("token audience {found:?} does not include the expected audience {expected:?}")]
    WrongAudience {
        /// The configured audience.
        expected: String,
        /// The `aud` values found.
        found: Vec<String>,
    },
    /// `iss` is not an accepted issuer.
    #[error("token issuer {found:?} is not accepted (expected {expected})")]
    WrongIssuer {
        /// The accepted issuer(s), for the message.
        expected: String,
        /// The `iss` found.
        found: String,
    },
}

/// Why a key set could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeySetError {
    /// The document is not the JSON it must be.
    #[error("key set is not valid JSON of the expected shape: {reason}")]
    Malformed {
        /// What was wrong.
        reason: String,
    },
    /// One key or certificate in it is unusable.
    #[error("key {kid:?} in the key set is unusable: {reason}")]
    BadKey {
        /// Its `kid`.
        kid: String,
        /// What was wrong.
        reason: String,
    },
    /// No usable RSA signing key.
    #[error("key set holds no RSA signing key")]
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum RsaKey {
    /// DER RSAPublicKey (PKCS#1), from a certificate.
    Pkcs1(Vec<u8>),
    /// Modulus and exponent, big-endian, from a JWK.
    Components { n: Vec<u8>, e: Vec<u8> },
}

/// RSA public keys by key ID: a JWKS (`{"keys":[...]}`, as Azure AD and Google's v3 endpoint
/// publish) or Google's v1 certificate map (`{"<kid>": "<PEM certificate>"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwkSet {
    keys: Vec<(String, RsaKey)>,
}

#[derive(Deserialize)]
struct Jwks {
    keys: Vec<Jwk>,
}

#[derive(Deserialize)]
struct Jwk {
    kty: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default, rename = "use")]
    use_: Option<String>,
    #[serde(default)]
    alg: Option<String>,
    #[serde(default)]
    n: Option<String>,
    #[serde(default)]
    e: Option<String>,
}

impl JwkSet {
    /// Loads a JWKS. Keys that are not RSA, or are marked for another use or algorithm
    /// than signing with RS256, are skipped; an RSA key without `kid`, `n` or `e` is an error.
    pub fn from_jwks_json(json: &[u8]) -> Result<Self, KeySetError> {
        let jwks: Jwks = serde_json::from_slice(json).map_err(|e| KeySetError::Malformed {
            reason: e.to_string(),
        })?;
        let mut keys = Vec::new();
        for jwk in jwks.keys {
            if jwk.kty != "RSA"
                || jwk.use_.as_deref().is_some_and(|u| u != "sig")
                || jwk.alg.as_deref().is_some_and(|a| a != "RS256")
            {
                continue;
            }
            let kid = jwk.kid.ok_or_else(|| KeySetError::BadKey {
                kid: String::new(),
                reason: "RSA key without kid".into(),
            })?;
            let decode = |field: &str, v: Option<String>| {
                let v = v.ok_or_else(|| KeySetError::BadKey {
                    kid: kid.clone(),
                    reason: format!("no {field}"),
                })?;
                URL_SAFE_NO_PAD
                    .decode(v.trim_end_matches('='))
                    .map_err(|e| KeySetError::BadKey {
                        kid: kid.clone(),
                        reason: format!("{field} is not base64url: {e}"),
                    })
            };
            let n = decode("n", jwk.n)?;
            let e = decode("e", jwk.e)?;
            keys.push((kid, RsaKey::Components { n, e }));
        }
        if keys.is_empty() {
            return Err(KeySetError::Empty);
        }
        Ok(Self { keys })
    }

    /// Loads Google's `https://www.googleapis.com/oauth2/v1/certs` format: a JSON object
    /// mapping each key ID to a PEM certificate. Only the certificate's RSA key is used
    /// (its validity is not Google's key rotation schedule; the response's `Expires`
    /// header is, and the caller honours it when caching).
    pub fn from_google_certs_json(json: &[u8]) -> Result<Self, KeySetError> {
        let map: std::collections::BTreeMap<String, String> = serde_json::from_slice(json)
            .map_err(|e| KeySetError::Malformed {
                reason: e.to_string(),
            })?;
        let mut set = Self::default();
        for (kid, pem) in map {
            set.add_certificate(&kid, pem.as_bytes())?;
        }
        if set.keys.is_empty() {
            return Err(KeySetError::Empty);
        }
        Ok(set)
    }

    /// Adds the RSA key of a PEM (or DER) certificate under `kid`.
    pub fn add_certificate(&mut self, kid: &str, cert: &[u8]) -> Result<(), KeySetError> {
        let bad = |reason: String| KeySetError::BadKey {
            kid: kid.to_owned(),
            reason,
        };
        let cert = crate::pkcs7::certificate_from_pem_or_der(cert).map_err(bad)?;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid.to_string() != "1.2.840.113549.1.1.1" {
            return Err(bad(format!(
                "key algorithm {} is not RSA",
                spki.algorithm.oid
            )));
        }
        self.keys.push((
            kid.to_owned(),
            RsaKey::Pkcs1(spki.subject_public_key.raw_bytes().to_vec()),
        ));
        Ok(())
    }

    /// Key IDs in the set.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(k, _)| k.as_str())
    }

    fn verify(&self, kid: &str, message: &[u8], signature: &[u8]) -> Result<(), JwtError> {
        let mut found = false;
        for (_, key) in self.keys.iter().filter(|(k, _)| k == kid) {
            found = true;
            let alg = &ring::signature::RSA_PKCS1_2048_8192_SHA256;
            let ok = match key {
                RsaKey::Pkcs1(der) => ring::signature::UnparsedPublicKey::new(alg, der)
                    .verify(message, signature)
                    .is_ok(),
                RsaKey::Components { n, e } => ring::signature::RsaPublicKeyComponents { n, e }
                    .verify(alg, message, signature)
                    .is_ok(),
            };
            if ok {
                return Ok(());
            }
        }
        if found {
            Err(JwtError::BadSignature {
                kid: kid.to_owned(),
            })
        } else {
            Err(JwtError::UnknownKeyId {
                kid: kid.to_owned(),
            })
        }
    }
}

/// The header fields read. Key-locating headers (`jku`, `x5u`, `jwk`, `x5c`) are ignored:
/// keys come only from the configured set.
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// Splits, decodes and verifies an RS256 token; returns its claims (a JSON object).
pub fn verify_rs256(
    token: &str,
    keys: &JwkSet,
) -> Result<serde_json::Map<String, serde_json::Value>, JwtError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::TooLarge { len: token.len() });
    }
    let token = token.trim();
    let malformed = |reason: String| JwtError::Malformed { reason };
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed(
            "not three dot-separated parts (header.payload.signature)".into(),
        ));
    };
    let decode = |what: &str, part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|e| malformed(format!("{what} is not base64url: {e}")))
    };
    let header: Header = serde_json::from_slice(&decode("header", h)?)
        .map_err(|e| malformed(format!("header is not a JSON object with alg: {e}")))?;
    if header.alg != "RS256" {
        return Err(JwtError::UnsupportedAlgorithm { found: header.alg });
    }
    if header.crit.is_some() {
        // RFC 7515 4.1.11: critical extensions the verifier does not understand refuse the
        // token; this verifier understands none.
        return Err(malformed(
            "header has critical extensions (crit), none are supported".into(),
        ));
    }
    let kid = header.kid.ok_or(JwtError::MissingKeyId)?;
    let signature = decode("signature", s)?;
    let signed = &token[..h.len() + 1 + p.len()];
    keys.verify(&kid, signed.as_bytes(), &signature)?;
    let payload = decode("payload", p)?;
    serde_json::from_slice(&payload)
        .map_err(|e| malformed(format!("payload is not a JSON object: {e}")))
}

/// Time and audience rules shared by the token verifiers.
pub(crate) struct TimeRules {
    pub(crate) now: i64,
    pub(crate) skew: Duration,
    pub(crate) require_exp: bool,
}

pub(crate) fn unix_now(now: SystemTime) -> i64 {
    match now.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

type Claims = serde_json::Map<String, serde_json::Value>;

/// An integer NumericDate claim (`None` if absent; an error if present but not an integer).
pub(crate) fn numeric(claims: &Claims, claim: &'static str) -> Result<Option<i64>, ClaimError> {
    match claims.get(claim) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or(ClaimError::Missing {
                claim,
                expected: "a number",
            }),
    }
}

/// A string claim.
pub(crate) fn string<'c>(claims: &'c Claims, claim: &'static str) -> Result<&'c str, ClaimError> {
    claims
        .get(claim)
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .ok_or(ClaimError::Missing {
            claim,
            expected: "a non-empty string",
        })
}

impl TimeRules {
    /// Checks exp, nbf and iat; returns (iat, exp).
    pub(crate) fn check(&self, claims: &Claims) -> Result<(Option<i64>, Option<i64>), ClaimError> {
        let skew = i64::try_from(self.skew.as_secs()).unwrap_or(i64::MAX);
        let skew_secs = self.skew.as_secs();
        let now = self.now;
        let exp = numeric(claims, "exp")?;
        match exp {
            None if self.require_exp => {
                return Err(ClaimError::Missing {
                    claim: "exp",
                    expected: "a number",
                })
            }
            Some(exp) if now.saturating_sub(skew) >= exp => {
                return Err(ClaimError::Expired {
                    expired_at: exp,
                    now,
                    skew_secs,
                })
            }
            _ => {}
        }
        if let Some(nbf) = numeric(claims, "nbf")? {
            if now.saturating_add(skew) < nbf {
                return Err(ClaimError::NotYetValid {
                    not_before: nbf,
                    now,
                    skew_secs,
                });
            }
        }
        let iat = numeric(claims, "iat")?;
        if let Some(iat) = iat {
            if now.saturating_add(skew) < iat {
                return Err(ClaimError::IssuedInFuture {
                    issued_at: iat,
                    now,
                    skew_secs,
                });
            }
        }
        Ok((iat, exp))
    }
}

/// `aud` (a string or an array of strings) must contain `expected`.
pub(crate) fn check_audience(claims: &Claims, expected: &str) -> Result<(), ClaimError> {
    let found: Vec<String> = match claims.get("aud") {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    if found.iter().any(|a| a == expected) {
        Ok(())
    } else {
        Err(ClaimError::WrongAudience {
            expected: expected.to_owned(),
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn alg_none_and_hs256_are_refused_before_any_key_lookup() {
        let keys = JwkSet::default();
        for alg in ["none", "HS256", "RS384", "ES256"] {
            let t = format!(
                "{}.{}.",
                b64(&format!(r#"{{"alg":"{alg}","kid":"k"}}"#)),
                b64("{}")
            );
            assert_eq!(
                verify_rs256(&t, &keys).unwrap_err(),
                JwtError::UnsupportedAlgorithm { found: alg.into() }
            );
        }
    }

    #[test]
    fn structure_errors_are_named() {
        let keys = JwkSet::default();
        assert!(matches!(
            verify_rs256("a.b", &keys),
            Err(JwtError::Malformed { .. })
        ));
        assert!(matches!(
            verify_rs256("a.b.c.d", &keys),
            Err(JwtError::Malformed { .. })
        ));
        let no_kid = format!("{}.{}.AA", b64(r#"{"alg":"RS256"}"#), b64("{}"));
        assert_eq!(
            verify_rs256(&no_kid, &keys).unwrap_err(),
            JwtError::MissingKeyId
        );
        let crit = format!(
            "{}.{}.AA",
            b64(r#"{"alg":"RS256","kid":"x","crit":["b64"]}"#),
            b64("{}")
        );
        assert!(
            matches!(verify_rs256(&crit, &keys), Err(JwtError::Malformed { reason }) if reason.contains("crit"))
        );
        let unknown = format!("{}.{}.AA", b64(r#"{"alg":"RS256","kid":"x"}"#), b64("{}"));
        assert_eq!(
            verify_rs256(&unknown, &keys).unwrap_err(),
            JwtError::UnknownKeyId { kid: "x".into() }
        );
    }

    #[test]
    fn time_rules_apply_the_skew_at_the_edges() {
        let claims: Claims = serde_json::from_str(r#"{"exp":1000,"nbf":900,"iat":900}"#).unwrap();
        let rules = |now| TimeRules {
            now,
            skew: Duration::from_secs(60),
            require_exp: true,
        };
        assert!(rules(1059).check(&claims).is_ok());
        assert!(matches!(
            rules(1060).check(&claims),
            Err(ClaimError::Expired { .. })
        ));
        assert!(rules(840).check(&claims).is_ok());
        assert!(matches!(
            rules(839).check(&claims),
            Err(ClaimError::NotYetValid { .. })
        ));
        let no_exp: Claims = serde_json::from_str("{}").unwrap();
        assert!(matches!(
            rules(0).check(&no_exp),
            Err(ClaimError::Missing { claim: "exp", .. })
        ));
    }

    #[test]
    fn audience_may_be_a_string_or_an_array() {
        let s: Claims = serde_json::from_str(r#"{"aud":"a"}"#).unwrap();
        let a: Claims = serde_json::from_str(r#"{"aud":["x","a"]}"#).unwrap();
        assert!(check_audience(&s, "a").is_ok());
        assert!(check_audience(&a, "a").is_ok());
        assert_eq!(
            check_audience(&a, "b").unwrap_err(),
            ClaimError::WrongAudience {
                expected: "b".into(),
                found: vec!["x".into(), "a".into()]
            }
        );
    }
}
