//! The parsers of untrusted input, reachable from the fuzz targets in `hsm/fuzz` (cargo
//! feature `fuzzing`, off by default). Not part of the crate's API: thin wrappers that keep
//! the parsers' own types private.

/// The largest answer body the transit client reads.
pub const MAX_TRANSIT_BODY: usize = crate::transit::MAX_BODY;

/// An HTTP answer as the transit client read it.
#[derive(Debug)]
pub struct TransitAnswer {
    /// The status code.
    pub status: u16,
    /// The body, framing removed.
    pub body: Vec<u8>,
}

/// The transit client's HTTP/1.1 answer reader over `bytes` (what an OpenBao server, or
/// anything on the path to it, sent).
pub fn read_transit_answer(bytes: &[u8]) -> std::io::Result<TransitAnswer> {
    crate::transit::read_response(bytes).map(|r| TransitAnswer {
        status: r.status,
        body: r.body,
    })
}
