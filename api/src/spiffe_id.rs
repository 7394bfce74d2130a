//! SPIFFE IDs and trust domain names, validated exactly as the SPIFFE-ID
//! specification (sections 2.1 to 2.3) requires.
//!
//! Validation is strict on purpose: an ID that some other implementation would
//! normalise (upper case, percent-encoding, `.` segments) is rejected, so two
//! IDs are equal exactly when their strings are equal.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Longest SPIFFE ID accepted, in bytes (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// Longest trust domain name accepted, in bytes (RFC 3986 host limit, SPIFFE-ID §2.3).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

const SCHEME_PREFIX: &str = "spiffe://";

/// The path of a server's SPIFFE ID in its trust domain (SPIRE's convention, which
/// agents check the server's SVID against).
pub const SERVER_PATH: &str = "/spire/server";
/// The path prefix of agents' SPIFFE IDs: `/spire/agent/<attestor>/<id>`.
pub const AGENT_PATH_PREFIX: &str = "/spire/agent/";

/// Why a string is not a valid SPIFFE ID or trust domain name.
///
/// Byte offsets count from the start of the string that was parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The input is empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The input is longer than [`MAX_SPIFFE_ID_LEN`].
    #[error("SPIFFE ID is {len} bytes long; the maximum is {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// There is no `scheme://` at all.
    #[error("SPIFFE ID must start with 'spiffe://'")]
    MissingScheme,
    /// The scheme is something other than `spiffe`.
    #[error("scheme is '{found}'; it must be 'spiffe'")]
    WrongScheme {
        /// The scheme given.
        found: String,
    },
    /// The scheme is `spiffe` in another case.
    #[error("scheme '{found}' must be written in lower case as 'spiffe'")]
    SchemeNotLowercase {
        /// The scheme given.
        found: String,
    },
    /// Nothing between `spiffe://` and the path.
    #[error("trust domain is missing (nothing between 'spiffe://' and the path)")]
    MissingTrustDomain,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`].
    #[error("trust domain is {len} bytes long; the maximum is {max}")]
    TrustDomainTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An upper-case ASCII letter in the trust domain.
    #[error("trust domain contains an upper-case letter {ch:?} at byte offset {offset}; trust domains must be lower case")]
    TrustDomainUppercase {
        /// The character.
        ch: char,
        /// Its byte offset.
        offset: usize,
    },
    /// `user@host`.
    #[error("trust domain contains '@' at byte offset {offset}: userinfo is not allowed")]
    UserInfo {
        /// Its byte offset.
        offset: usize,
    },
    /// `host:port`.
    #[error("trust domain contains ':' at byte offset {offset}: a port is not allowed")]
    Port {
        /// Its byte offset.
        offset: usize,
    },
    /// `%xx` in the trust domain.
    #[error("trust domain contains '%' at byte offset {offset}: percent-encoding is not allowed")]
    TrustDomainPercentEncoded {
        /// Its byte offset.
        offset: usize,
    },
    /// Any other character outside `[a-z0-9._-]`.
    #[error("trust domain contains {ch:?} at byte offset {offset}; only a-z, 0-9, '.', '-' and '_' are allowed")]
    TrustDomainChar {
        /// The character.
        ch: char,
        /// Its byte offset.
        offset: usize,
    },
    /// A URI was given where a bare trust domain name was expected.
    #[error("expected a trust domain name such as 'example.org', not a URI")]
    TrustDomainIsUri,
    /// A `?query` component.
    #[error("a query ('?' at byte offset {offset}) is not allowed")]
    Query {
        /// Its byte offset.
        offset: usize,
    },
    /// A `#fragment` component.
    #[error("a fragment ('#' at byte offset {offset}) is not allowed")]
    Fragment {
        /// Its byte offset.
        offset: usize,
    },
    /// A path given on its own does not start with `/`.
    #[error("path '{path}' must be empty or start with '/'")]
    PathNotAbsolute {
        /// The path given.
        path: String,
    },
    /// `//` in the path.
    #[error("path segment {segment} is empty (two consecutive '/')")]
    EmptySegment {
        /// The segment's number, counting from 1.
        segment: usize,
    },
    /// A `.` or `..` segment.
    #[error("path segment {segment} is '{value}'; '.' and '..' segments are not allowed")]
    DotSegment {
        /// The segment's number, counting from 1.
        segment: usize,
        /// The segment.
        value: String,
    },
    /// The path ends with `/`.
    #[error("path ends with a trailing '/'")]
    TrailingSlash,
    /// `%xx` in the path.
    #[error("path segment {segment} contains '%' at byte offset {offset}: percent-encoding is not allowed")]
    PathPercentEncoded {
        /// The segment's number, counting from 1.
        segment: usize,
        /// Its byte offset.
        offset: usize,
    },
    /// Any other character outside `[A-Za-z0-9._-]` in a path segment.
    #[error("path segment {segment} contains {ch:?} at byte offset {offset}; only A-Z, a-z, 0-9, '.', '-' and '_' are allowed")]
    PathChar {
        /// The segment's number, counting from 1.
        segment: usize,
        /// The character.
        ch: char,
        /// Its byte offset.
        offset: usize,
    },
}

/// A trust domain name, e.g. `example.org` (SPIFFE-ID §2.1).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
// `Box<str>`, not `String`: 16 bytes instead of 24, and a SPIFFE ID holds one; the
// server keeps hundreds of thousands of IDs in its entry index.
pub struct TrustDomain(Box<str>);

impl TrustDomain {
    /// Parses a bare trust domain name (`example.org`, not `spiffe://example.org`).
    pub fn parse(name: &str) -> Result<Self, SpiffeIdError> {
        if name.contains("://") {
            return Err(SpiffeIdError::TrustDomainIsUri);
        }
        validate_trust_domain(name, 0)?;
        Ok(TrustDomain(name.into()))
    }

    /// The name, e.g. `example.org`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself (`spiffe://example.org`), the
    /// identity of its signing authority.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            td: self.clone(),
            path: Box::default(),
        }
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({:?})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for TrustDomain {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<TrustDomain> for String {
    fn from(td: TrustDomain) -> String {
        td.0.into_string()
    }
}

/// A SPIFFE ID: `spiffe://<trust domain>[/<path>]` (SPIFFE-ID §2).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SpiffeId {
    td: TrustDomain,
    /// Empty, or `/seg(/seg)*`. A `Box<str>` for the reason `TrustDomain` holds one.
    path: Box<str>,
}

impl SpiffeId {
    /// Parses and validates a SPIFFE ID.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        check_len(s.len())?;
        let rest = match s.get(..SCHEME_PREFIX.len()) {
            Some(p) if p == SCHEME_PREFIX => &s[SCHEME_PREFIX.len()..],
            Some(p) if p.eq_ignore_ascii_case(SCHEME_PREFIX) => {
                return Err(SpiffeIdError::SchemeNotLowercase {
                    found: s[..SCHEME_PREFIX.len() - 3].to_owned(),
                })
            }
            _ => {
                return Err(match s.find("://") {
                    Some(i) => SpiffeIdError::WrongScheme {
                        found: s[..i].to_owned(),
                    },
                    None => SpiffeIdError::MissingScheme,
                })
            }
        };
        let base = SCHEME_PREFIX.len();
        let td_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let td = &rest[..td_end];
        validate_trust_domain(td, base)?;
        let after = &rest[td_end..];
        let after_offset = base + td_end;
        match after.as_bytes().first() {
            Some(b'?') => {
                return Err(SpiffeIdError::Query {
                    offset: after_offset,
                })
            }
            Some(b'#') => {
                return Err(SpiffeIdError::Fragment {
                    offset: after_offset,
                })
            }
            _ => {}
        }
        validate_path(after, after_offset)?;
        Ok(SpiffeId {
            td: TrustDomain(td.into()),
            path: after.into(),
        })
    }

    /// Builds `spiffe://<td><path>`; `path` must be empty or start with `/`.
    pub fn from_path(td: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        if !path.is_empty() && !path.starts_with('/') {
            return Err(SpiffeIdError::PathNotAbsolute {
                path: path.to_owned(),
            });
        }
        let base = SCHEME_PREFIX.len() + td.0.len();
        check_len(base + path.len())?;
        validate_path(path, base)?;
        Ok(SpiffeId {
            td: td.clone(),
            path: path.into(),
        })
    }

    /// The trust domain the ID belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The path: empty, or starting with `/` (e.g. `/ns/prod/sa/web`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether the ID belongs to `td`.
    pub fn is_member_of(&self, td: &TrustDomain) -> bool {
        &self.td == td
    }

    /// The server of `td`: `spiffe://<td>/spire/server`.
    pub fn server(td: &TrustDomain) -> SpiffeId {
        SpiffeId {
            td: td.clone(),
            path: SERVER_PATH.into(),
        }
    }

    /// An agent of `td` attested by `attestor`: `spiffe://<td>/spire/agent/<attestor>/<id>`.
    /// Fails when `attestor` or `id` is not a valid path segment (or sequence of them).
    pub fn agent(td: &TrustDomain, attestor: &str, id: &str) -> Result<SpiffeId, SpiffeIdError> {
        SpiffeId::from_path(td, &format!("{AGENT_PATH_PREFIX}{attestor}/{id}"))
    }

    /// The attestor segment of an agent ID (`tpm_ek` in
    /// `spiffe://<td>/spire/agent/tpm_ek/<hash>`); `None` when the ID is not under
    /// [`AGENT_PATH_PREFIX`].
    pub fn agent_attestor(&self) -> Option<&str> {
        let rest = self.path.strip_prefix(AGENT_PATH_PREFIX)?;
        // A valid path has no empty segment, so the first one is the attestor.
        rest.split('/').next()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME_PREFIX}{}{}", self.td.0, self.path)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId(\"{self}\")")
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Self::parse(s)
    }
}

impl From<SpiffeId> for String {
    fn from(id: SpiffeId) -> String {
        id.to_string()
    }
}

fn check_len(len: usize) -> Result<(), SpiffeIdError> {
    if len > MAX_SPIFFE_ID_LEN {
        return Err(SpiffeIdError::TooLong {
            len,
            max: MAX_SPIFFE_ID_LEN,
        });
    }
    Ok(())
}

/// `base` is the byte offset of `td` in the string being parsed, for messages.
fn validate_trust_domain(td: &str, base: usize) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    for (i, ch) in td.char_indices() {
        let offset = base + i;
        match ch {
            'a'..='z' | '0'..='9' | '.' | '-' | '_' => {}
            'A'..='Z' => return Err(SpiffeIdError::TrustDomainUppercase { ch, offset }),
            '@' => return Err(SpiffeIdError::UserInfo { offset }),
            ':' => return Err(SpiffeIdError::Port { offset }),
            '%' => return Err(SpiffeIdError::TrustDomainPercentEncoded { offset }),
            _ => return Err(SpiffeIdError::TrustDomainChar { ch, offset }),
        }
    }
    if td.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong {
            len: td.len(),
            max: MAX_TRUST_DOMAIN_LEN,
        });
    }
    Ok(())
}

/// `path` is empty or starts with `/`; `base` is its byte offset for messages.
fn validate_path(path: &str, base: usize) -> Result<(), SpiffeIdError> {
    let Some(segments) = path.strip_prefix('/') else {
        return Ok(());
    };
    let mut offset = base + 1;
    let count = segments.split('/').count();
    for (idx, seg) in segments.split('/').enumerate() {
        let segment = idx + 1;
        for (i, ch) in seg.char_indices() {
            let at = offset + i;
            match ch {
                'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' | '_' => {}
                '?' => return Err(SpiffeIdError::Query { offset: at }),
                '#' => return Err(SpiffeIdError::Fragment { offset: at }),
                '%' => {
                    return Err(SpiffeIdError::PathPercentEncoded {
                        segment,
                        offset: at,
                    })
                }
                _ => {
                    return Err(SpiffeIdError::PathChar {
                        segment,
                        ch,
                        offset: at,
                    })
                }
            }
        }
        match seg {
            "" if segment == count => return Err(SpiffeIdError::TrailingSlash),
            "" => return Err(SpiffeIdError::EmptySegment { segment }),
            "." | ".." => {
                return Err(SpiffeIdError::DotSegment {
                    segment,
                    value: seg.to_owned(),
                })
            }
            _ => {}
        }
        offset += seg.len() + 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
