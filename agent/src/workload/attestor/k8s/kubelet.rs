//! The kubelet's pod list (`GET https://<node>:<port>/pods`), fetched with the agent's
//! credential (bearer token re-read at every fetch, or a client certificate), the kubelet's
//! certificate verified against `kubelet_ca_path` (with the host dialled), and shared:
//! a list younger than `poll_retry_interval` serves every lookup, and lookups that need a
//! newer one while a fetch is under way wait for that fetch instead of starting their own
//! (at most one request in flight; each bounded by `kubelet_timeout` and
//! `max_response_bytes`).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use ironroot_runtime::https::{block_on, HttpsClient, HttpsError};

/// Why the pod list could not be had.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum KubeletError {
    /// The token file could not be read.
    #[error("cannot read the kubelet token (token_path {}): {reason}", path.display())]
    Token {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// No answer (unreachable, TLS refused, timeout, too large).
    #[error("kubelet at {url}: {reason}")]
    Request {
        /// The kubelet's URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The kubelet refused the agent's credential.
    #[error(
        "the kubelet at {url} refused the agent's credential (HTTP {status}): check token_path \
         or certificate_path, and that the agent may get nodes/proxy (pods)"
    )]
    Refused {
        /// The kubelet's URL.
        url: String,
        /// 401 or 403.
        status: u16,
    },
    /// Another HTTP status.
    #[error("kubelet at {url} answered GET /pods with HTTP {status}")]
    Status {
        /// The kubelet's URL.
        url: String,
        /// The status.
        status: u16,
    },
}

/// How the agent authenticates to the kubelet.
#[derive(Debug, Clone)]
pub(crate) enum Credential {
    /// `Authorization: Bearer <contents of the file>`.
    Token(PathBuf),
    /// The TLS client certificate (configured in the client).
    ClientCertificate,
}

struct Cached {
    at: Instant,
    list: Bytes,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    fetching: bool,
    /// The outcome of the last fetch, for those who waited on it.
    last_error: Option<(Instant, KubeletError)>,
}

/// The pod list, fetched and shared.
pub(crate) struct PodListSource {
    client: HttpsClient,
    url: String,
    credential: Credential,
    ttl: Duration,
    state: Mutex<State>,
    done: Condvar,
}

impl PodListSource {
    pub(crate) fn new(client: HttpsClient, credential: Credential, ttl: Duration) -> Arc<Self> {
        let url = format!("https://{}", client.authority());
        Arc::new(PodListSource {
            client,
            url,
            credential,
            ttl,
            state: Mutex::new(State::default()),
            done: Condvar::new(),
        })
    }

    /// A pod list fetched no earlier than `not_before` (when given) and younger than the TTL;
    /// fetched now if there is none, or awaited if a fetch is under way.
    pub(crate) fn get(&self, not_before: Option<Instant>) -> Result<Bytes, KubeletError> {
        let asked = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(c) = &s.cached {
                let fresh = c.at.elapsed() < self.ttl && not_before.is_none_or(|t| c.at >= t);
                if fresh {
                    return Ok(c.list.clone());
                }
            }
            if let Some((at, e)) = &s.last_error {
                // A fetch that failed after this lookup began answers it too.
                if *at >= asked {
                    return Err(e.clone());
                }
            }
            if !s.fetching {
                break;
            }
            s = self.done.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        s.fetching = true;
        drop(s);
        let started = Instant::now();
        let fetched = self.fetch();
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.fetching = false;
        let out = match fetched {
            Ok(list) => {
                s.cached = Some(Cached {
                    at: started,
                    list: list.clone(),
                });
                s.last_error = None;
                Ok(list)
            }
            Err(e) => {
                s.last_error = Some((Instant::now(), e.clone()));
                Err(e)
            }
        };
        self.done.notify_all();
        out
    }

    fn fetch(&self) -> Result<Bytes, KubeletError> {
        let token = match &self.credential {
            Credential::Token(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| KubeletError::Token {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?
                    .trim()
                    .to_owned(),
            ),
            Credential::ClientCertificate => None,
        };
        let answer =
            block_on(
                self.client
                    .request(http::Method::GET, "/pods", token.as_deref(), None),
            )
            .map_err(|e: HttpsError| KubeletError::Request {
                url: self.url.clone(),
                reason: if e.is_tls() {
                    format!("{e}; the agent verifies the kubelet against kubelet_ca_path")
                } else {
                    e.to_string()
                },
            })?;
        match answer.status {
            200 => Ok(answer.body),
            401 | 403 => Err(KubeletError::Refused {
                url: self.url.clone(),
                status: answer.status,
            }),
            status => Err(KubeletError::Status {
                url: self.url.clone(),
                status,
            }),
        }
    }
}
