//! Assembling an object's raw payload from the chunks a stream delivers.

use bytes::Bytes;

use crate::error::WireError;

/// Up to this many bytes are reserved when the header arrives; a larger
/// payload gets the rest of its buffer once this much has actually arrived.
/// A peer that announces 500 MiB and sends nothing thus costs us 16 MiB, not
/// 500. (Growing a large buffer is a `mremap` with glibc, not a copy.)
pub const EAGER_RESERVE: u64 = 16 * 1024 * 1024;

/// Checks an outgoing payload against the maximum message size, before
/// anything is sent (MISSION C5).
pub fn check_outgoing(len: u64, limit: u64) -> Result<(), WireError> {
    if len > limit {
        return Err(WireError::PayloadTooLarge {
            announced: len,
            limit,
        });
    }
    Ok(())
}

/// Collects exactly `announced` payload bytes into one buffer.
///
/// ```
/// use xsilo_wire::payload::PayloadAssembler;
/// let mut p = PayloadAssembler::new(5, 1024).unwrap();
/// p.push(b"hel").unwrap();
/// p.push(b"lo").unwrap();
/// assert!(p.push(b"!").is_err()); // more than announced: cut off
/// ```
#[derive(Debug)]
pub struct PayloadAssembler {
    announced: u64,
    buf: Vec<u8>,
}

impl PayloadAssembler {
    /// Starts a payload of `announced` bytes; refused if over `limit`.
    pub fn new(announced: u64, limit: u64) -> Result<Self, WireError> {
        check_outgoing(announced, limit)?;
        let eager = announced.min(EAGER_RESERVE) as usize;
        Ok(Self {
            announced,
            buf: Vec::with_capacity(eager),
        })
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.announced - self.buf.len() as u64
    }

    /// Appends a chunk. More bytes than announced is an error, and nothing of
    /// the offending chunk is kept.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), WireError> {
        if chunk.len() as u64 > self.remaining() {
            return Err(WireError::PayloadOverrun {
                announced: self.announced,
            });
        }
        if self.buf.capacity() - self.buf.len() < chunk.len() {
            // Reserve the whole rest at once: one growth per payload.
            self.buf.reserve_exact(self.remaining() as usize);
        }
        self.buf.extend_from_slice(chunk);
        Ok(())
    }

    /// The complete payload; an error if fewer bytes than announced arrived.
    pub fn finish(self) -> Result<Bytes, WireError> {
        if self.remaining() != 0 {
            return Err(WireError::PayloadTruncated {
                received: self.buf.len() as u64,
                announced: self.announced,
            });
        }
        Ok(Bytes::from(self.buf))
    }
}
