//! Where `gcp_iit` and `azure_msi` get their key set: a file (`certs_path` / `jwks_path`,
//! re-read when it changes) or a URL (`certs_url` / `jwks_url`, fetched over HTTPS and
//! cached with an expiry). Exactly one is configured.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ironroot_cloud_attest::jwt::{JwkSet, JwtError};

use super::key_file::KeyFile;
use super::key_url::{https_fetch, KeyUrl};
use crate::node::AttestError;

/// How a key URL is fetched and cached (the `keys_*` options).
pub(super) struct FetchOptions {
    pub(super) ca_file: PathBuf,
    pub(super) timeout: Duration,
    pub(super) max_age_floor: Duration,
    pub(super) max_age_ceiling: Duration,
}

/// An attestor's key set.
pub(super) enum Keys {
    File(KeyFile),
    Url(KeyUrl),
}

impl Keys {
    /// From `path` (option `path_option`) or `url` (option `url_option`): exactly one.
    pub(super) fn open(
        (path_option, path): (&'static str, Option<PathBuf>),
        (url_option, url): (&'static str, Option<String>),
        fetch: &FetchOptions,
    ) -> Result<Self, String> {
        match (path, url) {
            (Some(p), None) => Ok(Keys::File(KeyFile::open(path_option, p)?)),
            (None, Some(u)) => {
                if fetch.max_age_floor > fetch.max_age_ceiling {
                    return Err(format!(
                        "keys_max_age_floor ({}) is above keys_max_age_ceiling ({})",
                        humantime::format_duration(fetch.max_age_floor),
                        humantime::format_duration(fetch.max_age_ceiling)
                    ));
                }
                let get = https_fetch(url_option, &u, &fetch.ca_file, fetch.timeout)?;
                Ok(Keys::Url(KeyUrl::new(
                    url_option,
                    u,
                    get,
                    fetch.max_age_floor,
                    fetch.max_age_ceiling,
                )))
            }
            (Some(_), Some(_)) => Err(format!(
                "both {path_option} and {url_option} are set: keep one (a file you refresh, or \
                 the URL the server fetches)"
            )),
            (None, None) => Err(format!(
                "neither {path_option} nor {url_option} is set: the server has no key set to \
                 verify tokens with"
            )),
        }
    }

    /// The set to verify with; a URL's set that is unavailable or expired refuses, named.
    fn current(&self) -> Result<JwkSet, AttestError> {
        match self {
            Keys::File(f) => Ok(f.current()),
            Keys::Url(u) => u
                .current_at(Instant::now())
                .map_err(|e| AttestError::internal("key set", e.to_string())),
        }
    }

    /// Runs `verify` with the current set; if the token names a key ID the set lacks and
    /// the set comes from a URL, once more with a refreshed set (when a refresh is allowed
    /// now).
    pub(super) fn verify<T, E>(
        &self,
        verify: impl Fn(JwkSet) -> Result<T, E>,
        token_error: impl Fn(&E) -> Option<&JwtError>,
    ) -> Result<Result<T, E>, AttestError> {
        let first = verify(self.current()?);
        let unknown_kid = matches!(
            first.as_ref().err().and_then(&token_error),
            Some(JwtError::UnknownKeyId { .. })
        );
        if let (true, Keys::Url(u)) = (unknown_kid, self) {
            if let Some(set) = u.refreshed_for_unknown_kid_at(Instant::now()) {
                return Ok(verify(set));
            }
        }
        Ok(first)
    }
}
