//! The gRPC codec every generated client and server of this crate uses: tonic's
//! protobuf codec with a small first buffer.
//!
//! tonic's default starts each message buffer at 8 KiB, and a server-streaming
//! response keeps its buffer for the stream's life: the server holds one
//! WatchChanges stream per connected agent (10,000 of them at fleet size, 80 MB
//! of buffers for notices of a few bytes), the agent one per Workload API and SDS
//! stream. Messages larger than the first buffer grow it as they are encoded or
//! read; nothing else changes (the yield threshold is tonic's).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// The first size of a message buffer (tonic's default is 8 KiB).
const BUFFER_SIZE: usize = 1024;
/// How much a streaming response encodes before it yields (tonic's default).
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with a [`BUFFER_SIZE`] first buffer.
#[derive(Debug, Clone)]
pub struct SmallBufferCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBufferCodec<T, U> {
    fn default() -> Self {
        SmallBufferCodec(PhantomData)
    }
}

impl<T, U> Codec for SmallBufferCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER_SIZE, YIELD_THRESHOLD))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codec::Encoder;

    #[test]
    fn buffers_start_small_and_keep_tonics_yield_threshold() {
        let mut codec = SmallBufferCodec::<prost_types::Duration, prost_types::Duration>::default();
        let settings = codec.encoder().buffer_settings();
        assert_eq!(
            format!("{settings:?}"),
            format!("{:?}", BufferSettings::new(1024, 32 * 1024))
        );
    }
}
