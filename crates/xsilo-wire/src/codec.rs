//! Length-prefixed framing: `[u32 big-endian length][msgpack body]`.
//!
//! The length is checked against the caller's limit as soon as its four bytes
//! are known, before any of the body is buffered. Bodies are msgpack maps
//! (rmp-serde with named fields); a body with trailing bytes is malformed.

use std::io::Cursor;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::limits::LENGTH_PREFIX;

/// Appends one frame (length prefix and msgpack body) to `out`.
///
/// ```
/// # use xsilo_wire::codec::encode_frame;
/// # use xsilo_wire::frame::ControlFrame;
/// let mut out = Vec::new();
/// encode_frame(&ControlFrame::Goodbye, &mut out).unwrap();
/// assert_eq!(u32::from_be_bytes(out[..4].try_into().unwrap()) as usize, out.len() - 4);
/// ```
pub fn encode_frame<T: Serialize>(frame: &T, out: &mut Vec<u8>) -> Result<(), WireError> {
    let start = out.len();
    out.extend_from_slice(&[0; LENGTH_PREFIX]);
    let mut ser = rmp_serde::Serializer::new(&mut *out).with_struct_map();
    if let Err(e) = frame.serialize(&mut ser) {
        out.truncate(start);
        return Err(WireError::Encode(e.to_string()));
    }
    let body_len = out.len() - start - LENGTH_PREFIX;
    let Ok(len) = u32::try_from(body_len) else {
        out.truncate(start);
        return Err(WireError::Encode(format!(
            "frame body of {body_len} bytes does not fit a 32-bit length"
        )));
    };
    out[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Encodes one frame into a fresh buffer.
pub fn encode_to_vec<T: Serialize>(frame: &T) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::with_capacity(64);
    encode_frame(frame, &mut out)?;
    Ok(out)
}

/// Reads a length prefix and checks it against `limit`.
pub fn parse_length(prefix: [u8; LENGTH_PREFIX], limit: u32) -> Result<usize, WireError> {
    let len = u32::from_be_bytes(prefix);
    if len > limit {
        return Err(WireError::FrameTooLarge {
            announced: u64::from(len),
            limit: u64::from(limit),
        });
    }
    Ok(len as usize)
}

/// Decodes a frame body (without its length prefix) as a `T`. `what` names
/// the frame type in the error.
pub fn decode_body<T: DeserializeOwned>(body: &[u8], what: &'static str) -> Result<T, WireError> {
    let mut cursor = Cursor::new(body);
    let value = {
        let mut de = rmp_serde::Deserializer::new(&mut cursor);
        T::deserialize(&mut de).map_err(|e| WireError::Malformed {
            what,
            reason: e.to_string(),
        })?
    };
    let used = cursor.position() as usize;
    if used != body.len() {
        return Err(WireError::Malformed {
            what,
            reason: format!("{} trailing bytes after the frame", body.len() - used),
        });
    }
    Ok(value)
}

/// Incremental decoder for a stream of frames (the control stream).
///
/// Push bytes as they arrive and pull frames until it returns `Ok(None)`.
/// The buffer never holds more than one incomplete frame plus the last pushed
/// chunk, and an announced length over the limit is an error before its body
/// is buffered.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
    limit: u32,
}

impl FrameDecoder {
    /// A decoder accepting frames of at most `limit` body bytes.
    pub fn new(limit: u32) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            limit,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 4096 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Number of buffered bytes not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    ///
    /// After an error the stream is unusable: close it.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        let pending = &self.buf[self.start..];
        let Some(prefix) = pending.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let mut arr = [0u8; LENGTH_PREFIX];
        arr.copy_from_slice(prefix);
        let len = parse_length(arr, self.limit)?;
        let Some(body) = pending.get(LENGTH_PREFIX..LENGTH_PREFIX + len) else {
            return Ok(None);
        };
        let frame = decode_body(
            body,
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("frame"),
        )?;
        self.start += LENGTH_PREFIX + len;
        Ok(Some(frame))
    }

    /// Call when the stream ended: an error if a frame was cut in the middle.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.buffered() {
            0 => Ok(()),
            buffered => Err(WireError::TruncatedFrame { buffered }),
        }
    }
}

/// Serialises `frame` and decodes it back; used by tests and fuzzing.
#[doc(hidden)]
pub fn round_trip<T>(frame: &T, limit: u32) -> Result<T, WireError>
where
    T: Serialize + for<'de> Deserialize<'de>,
{
    let bytes = encode_to_vec(frame)?;
    let mut d = FrameDecoder::new(limit);
    d.push(&bytes);
    d.next_frame()?.ok_or(WireError::TruncatedFrame {
        buffered: bytes.len(),
    })
}
