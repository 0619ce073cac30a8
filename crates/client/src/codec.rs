//! The session stream's codec: frames go out as bytes encoded when they were taken from
//! the buffer, acknowledgements come in through prost as usual.
//!
//! The buffer keeps every message it sent until the sidecar acknowledges it (it is sent
//! again after a reconnect). With the generated client a frame had to be an owned
//! `ClientMessage`, so the buffer kept a deep copy of each message (its ids, name and
//! attributes): a tenth of the client's cost at 400 spans/s. Encoded at once, the
//! messages themselves move into the buffer's in-flight queue and nothing is copied.

use bytes::{BufMut, Bytes};
use runlens_api::pb;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};

/// The gRPC method of the session stream.
pub const SESSION_PATH: &str = "/runlens.v1.Runlens/Session";

/// Encoded `ClientMessage`s out, `ServerMessage`s in.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Codec for FrameCodec {
    type Encode = Bytes;
    type Decode = pb::ServerMessage;
    type Encoder = EncodedFrames;
    type Decoder = tonic_prost::ProstDecoder<pb::ServerMessage>;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedFrames
    }

    fn decoder(&mut self) -> Self::Decoder {
        tonic_prost::ProstCodec::<pb::ClientMessage, pb::ServerMessage>::raw_decoder(
            BufferSettings::default(),
        )
    }
}

/// Writes a frame's bytes as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct EncodedFrames;

impl Encoder for EncodedFrames {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_path_names_the_protos_session_method() {
        let proto = include_str!("../../../proto/runlens/v1/runlens.proto");
        for line in [
            "package runlens.v1;",
            "service Runlens {",
            "rpc Session(stream ClientMessage) returns (stream ServerMessage);",
        ] {
            assert!(proto.contains(line), "{line}");
        }
        assert_eq!(SESSION_PATH, "/runlens.v1.Runlens/Session");
    }
}
