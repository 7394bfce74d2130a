//! Agent ID paths, built as SPIRE builds them: `/spire/agent/<attestor>/<segment>/...`.

/// A value that would become part of an agent ID path holds characters a SPIFFE ID path
/// may not (only `A-Z a-z 0-9 . - _` are allowed, and a segment is never empty, `.` or `..`).
///
/// The value came from signed evidence or the configuration; refusing it keeps one
/// attested node from naming itself into another's path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field} {value:?} cannot be part of an agent ID path: SPIFFE ID path segments allow \
     only letters, digits, '.', '-' and '_', and are never empty, '.' or '..'"
)]
pub struct InvalidAgentPath {
    /// Which value (`instance ID`, `cluster name`, ...).
    pub field: &'static str,
    /// The value as found.
    pub value: String,
}

/// `/spire/agent/<attestor>/<segments...>`, each segment checked.
pub(crate) fn agent_path(
    attestor: &str,
    segments: &[(&'static str, &str)],
) -> Result<String, InvalidAgentPath> {
    let mut path = format!("/spire/agent/{attestor}");
    for (field, value) in segments {
        if !is_valid_segment(value) {
            return Err(InvalidAgentPath {
                field,
                value: (*value).to_owned(),
            });
        }
        path.push('/');
        path.push_str(value);
    }
    Ok(path)
}

fn is_valid_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_checked_segments() {
        assert_eq!(
            agent_path("aws_iid", &[("account", "123"), ("region", "us-west-2")]).unwrap(),
            "/spire/agent/aws_iid/123/us-west-2"
        );
    }

    #[test]
    fn refuses_separators_and_dot_segments() {
        for bad in ["", ".", "..", "a/b", "a b", "é", "x%2F"] {
            let err = agent_path("gcp_iit", &[("instance ID", bad)]).unwrap_err();
            assert_eq!(err.field, "instance ID");
            assert_eq!(err.value, bad);
        }
    }
}
