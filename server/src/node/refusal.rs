//! Refusals of the attestor seam itself, before or around any attestor's own checks: the
//! name an agent sends, and payloads that do not decode for the attestor it names. Each
//! says what the operator changes.

use super::AttestError;

/// Why the seam refused an exchange before (or instead of) the attestor's checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestorRefusal {
    /// The agent named no attestor ironroot has (a typo, or another implementation's
    /// plugin).
    #[error(
        "attestor '{name}' is unknown: ironroot has no node attestor by that name (this \
         server has enabled: {enabled}); set the agent's node_attestor to one of them"
    )]
    Unknown {
        /// The name the agent sent.
        name: String,
        /// The attestors enabled on this server, comma-separated.
        enabled: String,
    },
    /// The agent sent no attestor name at all.
    #[error(
        "the agent named no attestor (AttestParams.attestor is empty): it is older or newer \
         than this server's Node API; upgrade it to this server's version"
    )]
    NoName,
    /// The attestor exists, but behind a cargo feature this server was built without.
    #[error(
        "attestor '{name}' is not built into this server: it needs ironroot-server built \
         with the '{feature}' cargo feature; run such a build, or attest with an enabled \
         attestor ({enabled})"
    )]
    NotBuilt {
        /// The name the agent sent.
        name: String,
        /// The cargo feature the attestor is built under.
        feature: &'static str,
        /// The attestors enabled on this server, comma-separated.
        enabled: String,
    },
    /// The attestor is built in but not configured on this server.
    #[error(
        "attestor '{name}' is not enabled on this server (enabled: {enabled}); enable it \
         under [node_attestors] in the server's configuration, or configure the agent with \
         an enabled attestor"
    )]
    NotEnabled {
        /// The name the agent sent.
        name: String,
        /// The attestors enabled on this server, comma-separated.
        enabled: String,
    },
    /// A payload was empty (an agent that predates the payload carries its evidence in
    /// fields this server no longer reads).
    #[error(
        "attestor '{attestor}' was sent an empty {message} payload: the agent is older than \
         this server's Node API (evidence in AttestParams.payload); upgrade the agent"
    )]
    EmptyPayload {
        /// The attestor named.
        attestor: &'static str,
        /// Which payload: "evidence", "challenge response".
        message: &'static str,
    },
    /// A payload does not decode as the form the named attestor defines.
    #[error(
        "the {message} payload does not decode as attestor '{attestor}' defines it \
         ({form}): {reason}; the agent sent another attestor's evidence under this name, or \
         agent and server disagree on the attestor's wire form (upgrade the older one)"
    )]
    BadPayload {
        /// The attestor named.
        attestor: &'static str,
        /// Which payload: "evidence", "challenge response".
        message: &'static str,
        /// The form expected (a protobuf message name, or "UTF-8 text").
        form: &'static str,
        /// The decoder's error.
        reason: String,
    },
}

impl AttestorRefusal {
    /// The check name the rejection carries (`attestation rejected: <check>: ...`).
    pub fn check(&self) -> &'static str {
        match self {
            AttestorRefusal::Unknown { .. }
            | AttestorRefusal::NoName
            | AttestorRefusal::NotBuilt { .. }
            | AttestorRefusal::NotEnabled { .. } => "attestor",
            AttestorRefusal::EmptyPayload { message, .. }
            | AttestorRefusal::BadPayload { message, .. } => match *message {
                "evidence" => "evidence payload",
                _ => "challenge response payload",
            },
        }
    }
}

impl From<AttestorRefusal> for AttestError {
    /// A name the server will not serve is PERMISSION_DENIED (retrying cannot help until a
    /// configuration changes); a payload that is empty or does not decode is malformed
    /// input, INVALID_ARGUMENT.
    fn from(r: AttestorRefusal) -> Self {
        let check = r.check();
        match r {
            AttestorRefusal::EmptyPayload { .. }
            | AttestorRefusal::BadPayload { .. }
            | AttestorRefusal::NoName => AttestError::malformed(check, r.to_string()),
            _ => AttestError::rejected(check, r.to_string()),
        }
    }
}

/// Refuses `attestor`'s evidence payload, which does not decode as `form` (the attestor's own
/// wire form; `reason` is the decoder's error).
pub(crate) fn bad_evidence(
    attestor: &'static str,
    form: &'static str,
    reason: impl std::fmt::Display,
) -> AttestError {
    AttestorRefusal::BadPayload {
        attestor,
        message: "evidence",
        form,
        reason: reason.to_string(),
    }
    .into()
}

/// Refuses `attestor`'s challenge response payload: empty, or not decoding as `form`
/// (`reason`: the decoder's error; `None` for an empty payload).
#[cfg_attr(not(feature = "cloud"), allow(dead_code))]
pub(crate) fn bad_answer(
    attestor: &'static str,
    form: &'static str,
    bytes: &[u8],
    reason: impl std::fmt::Display,
) -> AttestError {
    let message = "challenge response";
    if bytes.is_empty() {
        return AttestorRefusal::EmptyPayload { attestor, message }.into();
    }
    AttestorRefusal::BadPayload {
        attestor,
        message,
        form,
        reason: reason.to_string(),
    }
    .into()
}

/// Decodes a protobuf payload of `attestor` (`message`: "evidence" or "challenge
/// response"), refusing an empty one or one that does not decode as `M`.
pub(crate) fn decode_payload<M: prost::Message + Default>(
    attestor: &'static str,
    message: &'static str,
    form: &'static str,
    bytes: &[u8],
) -> Result<M, AttestError> {
    if bytes.is_empty() {
        return Err(AttestorRefusal::EmptyPayload { attestor, message }.into());
    }
    M::decode(bytes).map_err(|e| {
        AttestorRefusal::BadPayload {
            attestor,
            message,
            form,
            reason: e.to_string(),
        }
        .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::RejectKind;
    use ironroot_api::node as pb;

    #[test]
    fn payloads_that_do_not_decode_are_refused_as_malformed_naming_the_attestor() {
        // A field-1 length-delimited prefix longer than the bytes that follow.
        let e = decode_payload::<pb::TpmAttestation>(
            "tpm_ek",
            "evidence",
            "TpmAttestation",
            &[0x0a, 0x7f, 0x01],
        )
        .unwrap_err();
        assert_eq!(e.kind, RejectKind::Malformed);
        assert_eq!(e.check, "evidence payload");
        assert!(e.reason.contains("attestor 'tpm_ek'"), "{e}");
        assert!(e.reason.contains("TpmAttestation"), "{e}");

        let e = decode_payload::<pb::TpmChallengeResponse>(
            "tpm_devid",
            "challenge response",
            "TpmChallengeResponse",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.kind, RejectKind::Malformed);
        assert_eq!(e.check, "challenge response payload");
        assert!(e.reason.contains("empty challenge response payload"), "{e}");
    }

    #[test]
    fn names_the_server_will_not_serve_are_denied() {
        for r in [
            AttestorRefusal::Unknown {
                name: "x".into(),
                enabled: "join_token".into(),
            },
            AttestorRefusal::NotEnabled {
                name: "tpm_devid".into(),
                enabled: "join_token".into(),
            },
            AttestorRefusal::NotBuilt {
                name: "aws_iid".into(),
                feature: "cloud",
                enabled: "join_token".into(),
            },
        ] {
            let e = AttestError::from(r);
            assert_eq!(e.kind, RejectKind::Denied);
            assert_eq!(e.check, "attestor");
        }
    }
}
