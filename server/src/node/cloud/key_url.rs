//! A key set (Google's certificate map or a JWKS) fetched from a configured HTTPS URL and
//! cached with an expiry: the response's `Cache-Control: max-age`, clamped to
//! `keys_max_age_floor` ..= `keys_max_age_ceiling` (no max-age: the floor).
//!
//! Guarantees (unit-tested below with a fetch and a clock of the test's own):
//! - a set is used only until it expires; past that, with no newer set, every attestation
//!   is refused naming the URL and why the refresh failed (fail closed);
//! - from half its lifetime on, a refresh is tried; a refresh that fails keeps the last good
//!   set until it expires;
//! - a token naming a `kid` the set lacks triggers one refresh, at most once per floor since
//!   the last fetch (a newly rotated key is accepted without waiting; made-up kids cannot
//!   hammer the URL);
//! - after a failed fetch, the next is tried no sooner than [`FAILED_FETCH_RETRY`] (a down
//!   endpoint does not cost every attestation a timeout).
//!
//! Fetches run on the attesting thread (a blocking-pool thread, as every attestor's
//! checks), one at a time; each is bounded by `keys_fetch_timeout`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ironroot_cloud_attest::jwt::JwkSet;
use tracing::{info, warn};

use super::key_file::parse_key_set;

/// How soon a fetch is retried after one failed.
pub(super) const FAILED_FETCH_RETRY: Duration = Duration::from_secs(5);

/// A fetch's result: the body and the response's max-age, if it gave one.
pub(super) struct Fetched {
    pub(super) body: Vec<u8>,
    pub(super) max_age: Option<Duration>,
}

/// Fetches the document once.
pub(super) type Fetch = Box<dyn Fn() -> Result<Fetched, String> + Send + Sync>;

/// Why no key set can be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum KeyUrlError {
    /// Never fetched successfully.
    #[error(
        "no key set from {option} {url} yet: {reason}; attestations with this attestor fail \
         until it can be fetched (check the URL, keys_ca_file and the network)"
    )]
    Unavailable {
        /// The option naming the URL.
        option: &'static str,
        /// The URL.
        url: String,
        /// Why the last fetch failed.
        reason: String,
    },
    /// The last good set expired and could not be refreshed.
    #[error(
        "the key set from {option} {url} expired {ago_secs} s ago and could not be refreshed: \
         {reason}; attestations with this attestor fail until it can be (check the URL, \
         keys_ca_file and the network)"
    )]
    Expired {
        /// The option naming the URL.
        option: &'static str,
        /// The URL.
        url: String,
        /// How long ago it expired.
        ago_secs: u64,
        /// Why the last refresh failed.
        reason: String,
    },
}

struct Good {
    set: JwkSet,
    fetched_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct State {
    good: Option<Good>,
    last_attempt: Option<Instant>,
    /// When the last fetch failed, and why (cleared by a success).
    last_failure: Option<(Instant, String)>,
}

/// The key set of one attestor, from its URL.
pub(super) struct KeyUrl {
    option: &'static str,
    url: String,
    fetch: Fetch,
    floor: Duration,
    ceiling: Duration,
    state: Mutex<State>,
}

impl KeyUrl {
    /// Nothing is fetched until the first attestation needs the set.
    pub(super) fn new(
        option: &'static str,
        url: String,
        fetch: Fetch,
        floor: Duration,
        ceiling: Duration,
    ) -> Self {
        KeyUrl {
            option,
            url,
            fetch,
            floor,
            ceiling: ceiling.max(floor),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One fetch; on success the new set replaces the old.
    fn refresh(&self, state: &mut State, now: Instant) -> Result<(), String> {
        state.last_attempt = Some(now);
        let result = (self.fetch)().and_then(|f| {
            let set = parse_key_set(&f.body)?;
            Ok((set, f.max_age))
        });
        match result {
            Ok((set, max_age)) => {
                let lifetime = max_age
                    .unwrap_or(self.floor)
                    .clamp(self.floor, self.ceiling);
                info!(
                    option = self.option,
                    url = %self.url,
                    keys = set.key_ids().count(),
                    lifetime_secs = lifetime.as_secs(),
                    "key set fetched"
                );
                state.good = Some(Good {
                    set,
                    fetched_at: now,
                    expires_at: now + lifetime,
                });
                state.last_failure = None;
                Ok(())
            }
            Err(e) => {
                warn!(option = self.option, url = %self.url, error = %e, "key set fetch failed");
                state.last_failure = Some((now, e.clone()));
                Err(e)
            }
        }
    }

    /// No fetch within `every` of the last one.
    fn since_last_attempt(state: &State, now: Instant, every: Duration) -> bool {
        state
            .last_attempt
            .is_none_or(|t| now.saturating_duration_since(t) >= every)
    }

    /// The set to verify with at `now`, refreshed first when due.
    pub(super) fn current_at(&self, now: Instant) -> Result<JwkSet, KeyUrlError> {
        let mut state = self.lock();
        let usable = state.good.as_ref().is_some_and(|g| now < g.expires_at);
        let due = match &state.good {
            Some(g) if usable => now >= g.fetched_at + (g.expires_at - g.fetched_at) / 2,
            _ => true,
        };
        if due {
            let retry = state
                .last_failure
                .as_ref()
                .is_none_or(|(t, _)| now.saturating_duration_since(*t) >= FAILED_FETCH_RETRY);
            if retry {
                // A failure is logged and remembered; the last good set serves until it
                // expires.
                let _ = self.refresh(&mut state, now);
            }
        }
        let reason = || {
            state
                .last_failure
                .as_ref()
                .map(|(_, e)| e.clone())
                .unwrap_or_else(|| "retrying shortly".into())
        };
        match &state.good {
            Some(g) if now < g.expires_at => Ok(g.set.clone()),
            Some(g) => Err(KeyUrlError::Expired {
                option: self.option,
                url: self.url.clone(),
                ago_secs: now.saturating_duration_since(g.expires_at).as_secs(),
                reason: reason(),
            }),
            None => Err(KeyUrlError::Unavailable {
                option: self.option,
                url: self.url.clone(),
                reason: reason(),
            }),
        }
    }

    /// After a token named a key ID the set lacks: a refreshed set, if a refresh is
    /// allowed now (at most once per floor) and succeeded.
    pub(super) fn refreshed_for_unknown_kid_at(&self, now: Instant) -> Option<JwkSet> {
        let mut state = self.lock();
        if !Self::since_last_attempt(&state, now, self.floor) {
            return None;
        }
        self.refresh(&mut state, now).ok()?;
        state.good.as_ref().map(|g| g.set.clone())
    }
}

/// `Cache-Control`'s max-age (`no-store` / `no-cache`: zero, so the floor applies).
pub(super) fn max_age(cache_control: &str) -> Option<Duration> {
    let mut found = None;
    for d in cache_control.split(',').map(str::trim) {
        let lower = d.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            return Some(Duration::ZERO);
        }
        if let Some(v) = lower.strip_prefix("max-age=") {
            found = v
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    found
}

/// The production fetch: `GET url` over HTTPS verified against `ca_file`.
pub(super) fn https_fetch(
    url_option: &'static str,
    url: &str,
    ca_file: &std::path::Path,
    timeout: Duration,
) -> Result<Fetch, String> {
    use ironroot_runtime::https::{block_on, HttpsClient, TlsOptions};
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{url_option} {url:?} is not a URL: {e}"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url_option} {url:?} names no host"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("{url_option} {url:?} must be https://"));
    }
    let path = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let tls = TlsOptions {
        ca_file: Some(("keys_ca_file", ca_file.to_owned())),
        ..TlsOptions::default()
    }
    .client_config()
    .map_err(|e| e.to_string())?;
    /// Google's and Entra's key documents are a few KiB.
    const MAX_BODY: usize = 1024 * 1024;
    let client = HttpsClient::new(&format!("https://{authority}"), tls, timeout, MAX_BODY)
        .map_err(|e| format!("{url_option}: {e}"))?;
    Ok(Box::new(move || {
        let r = block_on(client.request(http::Method::GET, &path, None, None))
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("HTTP {}", r.status));
        }
        let max_age = r
            .headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(max_age);
        Ok(Fetched {
            body: r.body.to_vec(),
            max_age,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_cloud_attest::test_support::{jwks_json, TestKey};
    use std::sync::{Arc, Mutex as StdMutex};

    /// The body and max-age it serves, or why it fails.
    type Answer = Result<(String, Option<u64>), String>;

    /// What the fake endpoint answers next, and how many fetches it saw.
    #[derive(Clone)]
    struct Endpoint(Arc<StdMutex<(Answer, usize)>>);

    impl Endpoint {
        fn new(body: String, max_age: Option<u64>) -> Self {
            Endpoint(Arc::new(StdMutex::new((Ok((body, max_age)), 0))))
        }
        fn set(&self, r: Answer) {
            self.0.lock().unwrap().0 = r;
        }
        fn fetches(&self) -> usize {
            self.0.lock().unwrap().1
        }
        fn fetch(&self) -> Fetch {
            let e = self.0.clone();
            Box::new(move || {
                let mut g = e.lock().unwrap();
                g.1 += 1;
                g.0.clone().map(|(body, age)| Fetched {
                    body: body.into_bytes(),
                    max_age: age.map(Duration::from_secs),
                })
            })
        }
    }

    const S: Duration = Duration::from_secs(1);

    fn kids(set: &JwkSet) -> Vec<String> {
        set.key_ids().map(str::to_owned).collect()
    }

    #[test]
    fn max_age_is_read_and_no_cache_means_zero() {
        assert_eq!(
            max_age("public, max-age=19379, must-revalidate, no-transform"),
            Some(Duration::from_secs(19379))
        );
        assert_eq!(max_age("no-cache"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=abc"), None);
    }

    #[test]
    fn max_age_is_clamped_a_failed_refresh_keeps_the_set_until_it_expires_then_fails_closed() {
        let (k1, k2) = (TestKey::rsa2048(), TestKey::rsa2048());
        let ep = Endpoint::new(jwks_json(&[("k1", &k1)]), Some(3600));
        // Floor 60 s, ceiling 600 s: max-age 3600 becomes 600.
        let keys = KeyUrl::new(
            "jwks_url",
            "https://x/keys".into(),
            ep.fetch(),
            60 * S,
            600 * S,
        );
        let t0 = Instant::now();
        assert_eq!(kids(&keys.current_at(t0).unwrap()), ["k1"]);
        // Fresh: no refetch before half the lifetime.
        keys.current_at(t0 + 299 * S).unwrap();
        assert_eq!(ep.fetches(), 1);
        // From half its lifetime, refreshed: a rotated set replaces it.
        ep.set(Ok((jwks_json(&[("k1", &k1), ("k2", &k2)]), Some(10))));
        assert_eq!(kids(&keys.current_at(t0 + 300 * S).unwrap()), ["k1", "k2"]);
        assert_eq!(ep.fetches(), 2);
        // max-age 10 < floor: the set lives 60 s (from t0+300). The endpoint goes down.
        ep.set(Err("HTTP 503".into()));
        // Refresh due at t0+330; it fails, the last good set still serves.
        assert_eq!(kids(&keys.current_at(t0 + 331 * S).unwrap()), ["k1", "k2"]);
        assert_eq!(ep.fetches(), 3);
        // No second try within FAILED_FETCH_RETRY.
        keys.current_at(t0 + 333 * S).unwrap();
        assert_eq!(ep.fetches(), 3);
        // Expired at t0+360: refused, naming the URL and the cause.
        let e = keys.current_at(t0 + 361 * S).unwrap_err();
        assert!(matches!(e, KeyUrlError::Expired { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains("jwks_url https://x/keys expired") && msg.contains("HTTP 503"),
            "{msg}"
        );
        // Back up: the next attempt (FAILED_FETCH_RETRY after the last) succeeds.
        ep.set(Ok((jwks_json(&[("k2", &k2)]), None)));
        keys.current_at(t0 + 362 * S).unwrap_err();
        assert!(keys.current_at(t0 + 361 * S + FAILED_FETCH_RETRY).is_ok());
    }

    #[test]
    fn an_unknown_kid_refreshes_at_most_once_per_floor_and_a_first_failure_is_named() {
        let (k1, k2) = (TestKey::rsa2048(), TestKey::rsa2048());
        let ep = Endpoint::new(String::new(), None);
        ep.set(Err("connection refused".into()));
        let keys = KeyUrl::new(
            "certs_url",
            "https://g/certs".into(),
            ep.fetch(),
            60 * S,
            600 * S,
        );
        let t0 = Instant::now();
        let e = keys.current_at(t0).unwrap_err();
        assert!(matches!(e, KeyUrlError::Unavailable { .. }), "{e}");
        assert!(e.to_string().contains("connection refused"), "{e}");
        // Within FAILED_FETCH_RETRY: not retried.
        keys.current_at(t0 + S).unwrap_err();
        assert_eq!(ep.fetches(), 1);
        ep.set(Ok((jwks_json(&[("k1", &k1)]), Some(600))));
        keys.current_at(t0 + FAILED_FETCH_RETRY).unwrap();
        assert_eq!(ep.fetches(), 2);
        // k2 appears at the endpoint; a token under k2 within the floor of the last fetch
        // does not refetch, one after it does.
        ep.set(Ok((jwks_json(&[("k1", &k1), ("k2", &k2)]), Some(600))));
        let t1 = t0 + FAILED_FETCH_RETRY;
        assert!(keys.refreshed_for_unknown_kid_at(t1 + 30 * S).is_none());
        let set = keys.refreshed_for_unknown_kid_at(t1 + 60 * S).unwrap();
        assert_eq!(kids(&set), ["k1", "k2"]);
        assert!(keys.refreshed_for_unknown_kid_at(t1 + 61 * S).is_none());
        assert_eq!(ep.fetches(), 3);
        // A body that is no key set counts as a failed fetch, naming why.
        ep.set(Ok(("<html>".into(), None)));
        assert!(keys.refreshed_for_unknown_kid_at(t1 + 200 * S).is_none());
        assert_eq!(kids(&keys.current_at(t1 + 201 * S).unwrap()), ["k1", "k2"]);
    }
}
