//! A gRPC call answered with a status instead of a result. The status code is
//! mapped here, once, into what the agent decides on ([`RefusalKind`]): nothing
//! else looks at codes or status text.

use std::error::Error as _;

/// What a refused call means to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RefusalKind {
    /// `PermissionDenied`: the peer will not serve this caller as it is (an agent
    /// SVID that was evicted, banned or superseded). Retrying the same cannot help.
    Denied,
    /// The call never reached the peer: tonic made the status from a local
    /// transport failure (connection refused or lost).
    Unreachable,
    /// `Unavailable` sent by the peer: it answered but cannot serve now.
    Unavailable,
    /// `ResourceExhausted`: over one of the peer's limits (the message names it); the same
    /// call passes later.
    Exhausted,
    /// Any other code.
    Other,
}

/// A call refused with a gRPC status: its code, message and meaning.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct Refused {
    code: tonic::Code,
    message: String,
    kind: RefusalKind,
}

impl Refused {
    /// What the refusal means.
    pub fn kind(&self) -> RefusalKind {
        self.kind
    }

    /// The gRPC status code.
    pub fn code(&self) -> tonic::Code {
        self.code
    }

    /// The status message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<tonic::Status> for Refused {
    fn from(s: tonic::Status) -> Self {
        // A status decoded from the peer's trailers has no source; one tonic made
        // from a local transport error carries that error as its source.
        let local = s.source().is_some();
        let kind = match s.code() {
            tonic::Code::PermissionDenied => RefusalKind::Denied,
            tonic::Code::Unavailable if local => RefusalKind::Unreachable,
            tonic::Code::Unavailable => RefusalKind::Unavailable,
            tonic::Code::ResourceExhausted => RefusalKind::Exhausted,
            _ => RefusalKind::Other,
        };
        Refused {
            code: s.code(),
            message: s.message().to_owned(),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_what_the_agent_decides_on() {
        let r = Refused::from(tonic::Status::permission_denied("evicted"));
        assert_eq!(r.kind(), RefusalKind::Denied);
        assert_eq!(r.to_string(), "evicted (PermissionDenied)");
        let r = Refused::from(tonic::Status::unavailable("not connected yet"));
        assert_eq!(r.kind(), RefusalKind::Unavailable);
        let r = Refused::from(tonic::Status::resource_exhausted("over a limit"));
        assert_eq!(r.kind(), RefusalKind::Exhausted);
        let r = Refused::from(tonic::Status::invalid_argument("no"));
        assert_eq!(r.kind(), RefusalKind::Other);
    }

    #[test]
    fn a_local_transport_failure_is_unreachable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let s = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(io))));
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(Refused::from(s).kind(), RefusalKind::Unreachable);
    }
}
