//! One encoded copy of each streamed Workload API response, shared by every
//! stream that sends it.
//!
//! A held FetchX509SVID stream used to keep its own copy of its last
//! response, and tonic's encoder another: about 300 KB per stream with 100
//! SVIDs. Here a response is built and encoded once per cache snapshot and
//! per set of SVIDs (the entries that matched, after expiry), as a complete
//! gRPC message (flag, length, protobuf) in a reference-counted buffer; each
//! stream holds a pointer to the last one it sent and hands the same bytes
//! to HTTP/2, which sends them without copying.
//!
//! What a caller receives is still decided per caller: the key of an X.509
//! response is the exact list of entries that matched the caller's
//! selectors (which fixes its federated bundles too), and that of a bundles
//! response the exact set of federated trust domains the caller may have, so
//! two callers share bytes only when they would have been sent identical
//! responses.
//!
//! Memory: the memo keeps weak references, so a response nobody streams any
//! more is freed; the memo is emptied when the snapshot changes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use bytes::{BufMut, Bytes, BytesMut};

use crate::cache::Snapshot;

/// A gRPC length-prefixed message: 1 byte "not compressed", 4 bytes of
/// length (big-endian), then the protobuf encoding.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct EncodedMessage(Bytes);

/// Messages larger than this (4 GiB) cannot be framed.
#[derive(Debug, thiserror::Error)]
#[error("a response of {0} bytes is too large for one gRPC message")]
pub(crate) struct TooLarge(usize);

impl EncodedMessage {
    /// Encodes `m` once.
    pub(crate) fn encode<M: prost::Message>(m: &M) -> Result<Self, TooLarge> {
        let len = m.encoded_len();
        let len32 = u32::try_from(len).map_err(|_| TooLarge(len))?;
        let mut buf = BytesMut::with_capacity(5 + len);
        buf.put_u8(0);
        buf.put_u32(len32);
        // Cannot fail: the buffer has the capacity encoded_len asked for.
        m.encode_raw(&mut buf);
        Ok(EncodedMessage(buf.freeze()))
    }

    /// The framed message, for an HTTP/2 DATA frame (a new reference to the
    /// same bytes, never a copy).
    pub(crate) fn frame(&self) -> Bytes {
        self.0.clone()
    }
}

/// Which response a memo slot holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ResponseKey {
    /// FetchX509SVID for exactly these entries (ids, in snapshot order).
    X509Svids(Vec<String>),
    /// FetchX509Bundles with exactly these federated trust domains (sorted).
    X509Bundles(Vec<String>),
    /// FetchJWTBundles with exactly these federated trust domains (sorted).
    JwtBundles(Vec<String>),
}

#[derive(Default)]
struct Memo {
    /// The snapshot the responses were built from. A `Weak` keeps the
    /// allocation (not the snapshot) alive, so its address cannot be reused
    /// by a later snapshot while it is compared.
    snapshot: Weak<Snapshot>,
    responses: HashMap<ResponseKey, Weak<EncodedMessage>>,
}

/// The memo of encoded responses for the current snapshot.
#[derive(Default)]
pub(crate) struct SharedResponses {
    memo: Mutex<Memo>,
}

impl SharedResponses {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The encoded response `key` for `snapshot`: the one already built if a
    /// stream still holds it, else `build()` encoded now and remembered.
    pub(crate) fn get_or_build<M, F>(
        &self,
        snapshot: &Arc<Snapshot>,
        key: ResponseKey,
        build: F,
    ) -> Result<Arc<EncodedMessage>, TooLarge>
    where
        M: prost::Message,
        F: FnOnce() -> M,
    {
        let mut memo = self.memo.lock().unwrap_or_else(|e| e.into_inner());
        if !std::ptr::eq(memo.snapshot.as_ptr(), Arc::as_ptr(snapshot)) {
            memo.snapshot = Arc::downgrade(snapshot);
            memo.responses.clear();
        }
        if let Some(m) = memo.responses.get(&key).and_then(Weak::upgrade) {
            return Ok(m);
        }
        let m = Arc::new(EncodedMessage::encode(&build())?);
        // Forget responses nobody holds any more before adding one.
        memo.responses.retain(|_, w| w.strong_count() > 0);
        memo.responses.insert(key, Arc::downgrade(&m));
        Ok(m)
    }

    #[cfg(test)]
    /// Responses remembered (live or not yet pruned).
    pub(crate) fn len(&self) -> usize {
        self.memo
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .responses
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_api::workload as pb;
    use prost::Message;

    fn snap(td: &str) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            trust_domain: td.into(),
            ..Snapshot::default()
        })
    }

    fn bundles(b: &[u8]) -> pb::X509BundlesResponse {
        pb::X509BundlesResponse {
            crl: vec![],
            bundles: [("spiffe://example.org".to_string(), b.to_vec())].into(),
        }
    }

    #[test]
    fn the_frame_is_a_grpc_message_that_decodes_back() {
        let m = bundles(&[7u8; 300]);
        let e = EncodedMessage::encode(&m).unwrap();
        let f = e.frame();
        assert_eq!(f[0], 0, "not compressed");
        let len = u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize;
        assert_eq!(len, f.len() - 5);
        assert_eq!(pb::X509BundlesResponse::decode(&f[5..]).unwrap(), m);
        // Frames share the buffer.
        assert_eq!(e.frame().as_ptr(), f.as_ptr());
    }

    #[test]
    fn one_build_per_snapshot_and_key_while_someone_holds_it() {
        let shared = SharedResponses::new();
        let s1 = snap("a");
        let mut builds = 0;
        let a = shared
            .get_or_build(&s1, ResponseKey::X509Bundles(vec![]), || {
                builds += 1;
                bundles(b"1")
            })
            .unwrap();
        let b = shared
            .get_or_build(&s1, ResponseKey::X509Bundles(vec![]), || {
                builds += 1;
                bundles(b"other")
            })
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(builds, 1);
        // Another key, same snapshot: its own response.
        let c = shared
            .get_or_build(&s1, ResponseKey::X509Svids(vec!["e1".into()]), || {
                bundles(b"2")
            })
            .unwrap();
        assert_ne!(a.frame(), c.frame());
        // A new snapshot: built again.
        let s2 = snap("a");
        let d = shared
            .get_or_build(&s2, ResponseKey::X509Bundles(vec![]), || bundles(b"3"))
            .unwrap();
        assert!(!Arc::ptr_eq(&a, &d));
        assert_eq!(
            shared.len(),
            1,
            "the old snapshot's responses are forgotten"
        );
    }

    #[test]
    fn a_response_nobody_holds_is_freed() {
        let shared = SharedResponses::new();
        let s = snap("a");
        let a = shared
            .get_or_build(&s, ResponseKey::X509Svids(vec!["e1".into()]), || {
                bundles(b"1")
            })
            .unwrap();
        let weak = Arc::downgrade(&a);
        drop(a);
        assert!(
            weak.upgrade().is_none(),
            "the memo holds no strong reference"
        );
        let _b = shared
            .get_or_build(&s, ResponseKey::X509Svids(vec!["e2".into()]), || {
                bundles(b"2")
            })
            .unwrap();
        assert_eq!(shared.len(), 1, "the dead slot was pruned");
    }

    #[test]
    fn the_x509_key_is_the_exact_entry_list() {
        let shared = SharedResponses::new();
        let s = snap("a");
        let one = shared
            .get_or_build(&s, ResponseKey::X509Svids(vec!["e1".into()]), || {
                bundles(b"e1")
            })
            .unwrap();
        let two = shared
            .get_or_build(
                &s,
                ResponseKey::X509Svids(vec!["e1".into(), "e2".into()]),
                || bundles(b"e1e2"),
            )
            .unwrap();
        assert_ne!(one.frame(), two.frame());
        let none = shared
            .get_or_build(&s, ResponseKey::X509Svids(vec![]), || bundles(b""))
            .unwrap();
        assert_ne!(one.frame(), none.frame());
    }
}
