//! An object's payload: how the runtime holds a value, and how it is
//! assembled from the chunks a stream delivers.
//!
//! A [`Payload`] is the value's wire bytes, or, for a numeric array on a
//! little-endian machine, the typed vector itself behind its
//! [`crate::array`] header. The wire bytes are the same either way
//! (the header, then the elements' little-endian bytes), but the typed form
//! costs no copy to make (`Payload::from_vec` keeps the task's vector) and
//! none to take back when the payload is the last holder of it
//! ([`Payload::into_vec`]). The [`PayloadAssembler`] receives an array
//! payload straight into a typed vector, so a received model is copied once
//! (from the QUIC chunks) and not again when a task takes it.

use std::sync::Arc;

use bytes::Bytes;

use crate::array::{self, ArrayError, Element, Elements};
use crate::error::WireError;

/// Numeric arrays are kept typed only where their bytes in memory are their
/// wire bytes.
const TYPED: bool = cfg!(target_endian = "little");

/// An encoded value as the runtime holds, sends and receives it. Cloning
/// does not copy.
///
/// ```
/// use bytes::Bytes;
/// use xsilo_wire::payload::Payload;
///
/// let weights = vec![0.5f32; 1000];
/// let p = Payload::from_vec(weights);
/// assert_eq!(p.len(), 16 + 4 * 1000); // the array header, then the elements
/// assert_eq!(p.to_bytes(), Bytes::from(xsilo_wire::array::encode_vec(&[0.5f32; 1000])));
/// let back: Vec<f32> = p.into_vec().unwrap(); // the same vector, not a copy
/// assert_eq!(back.len(), 1000);
/// ```
#[derive(Clone)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    /// Wire bytes as they are.
    Raw(Bytes),
    /// A numeric array: its header's bytes and its typed elements.
    Array(Arc<TypedArray>),
}

struct TypedArray {
    head: Bytes,
    elements: Elements,
}

/// The elements of a shared typed array, as bytes for the transport.
struct ElementBytes(Arc<TypedArray>);

impl AsRef<[u8]> for ElementBytes {
    fn as_ref(&self) -> &[u8] {
        self.0.elements.native_bytes()
    }
}

impl Payload {
    /// The payload of a one-dimensional numeric array, keeping `data`
    /// itself (on a big-endian machine it is encoded instead).
    pub fn from_vec<E: Element>(data: Vec<E>) -> Self {
        if !TYPED {
            return Self(Repr::Raw(Bytes::from(array::encode_vec(&data))));
        }
        let head = array::header(E::TYPE, &[data.len() as u64], 0);
        Self(Repr::Array(Arc::new(TypedArray {
            head: Bytes::from(head),
            elements: E::into_elements(data),
        })))
    }

    /// Its length in bytes on the wire.
    pub fn len(&self) -> usize {
        match &self.0 {
            Repr::Raw(b) => b.len(),
            Repr::Array(a) => a.head.len() + a.elements.native_bytes().len(),
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when the payload keeps a typed array (no copy was made).
    pub fn is_typed(&self) -> bool {
        matches!(self.0, Repr::Array(_))
    }

    /// The wire bytes as one or two pieces (header and elements), without
    /// copying, to write in order.
    pub fn parts(&self) -> Vec<Bytes> {
        match &self.0 {
            Repr::Raw(b) => vec![b.clone()],
            Repr::Array(a) => vec![a.head.clone(), Bytes::from_owner(ElementBytes(a.clone()))],
        }
    }

    /// The wire bytes in one piece: shared for raw bytes, a copy for a
    /// typed array.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0 {
            Repr::Raw(b) => b.clone(),
            Repr::Array(a) => {
                let mut out = Vec::with_capacity(self.len());
                out.extend_from_slice(&a.head);
                out.extend_from_slice(a.elements.native_bytes());
                Bytes::from(out)
            }
        }
    }

    /// The one-dimensional array of `E` this payload holds, checked as
    /// [`array::decode_vec`] checks it. A typed array this payload is the
    /// last holder of is moved out without a copy; a shared one is copied
    /// with one `memcpy`; raw bytes are decoded.
    pub fn into_vec<E: Element>(self) -> Result<Vec<E>, ArrayError> {
        let a = match self.0 {
            Repr::Raw(b) => return array::decode_vec(&b),
            Repr::Array(a) => a,
        };
        // In the decoder's order: the rank, then the element type.
        let rank = a.head.get(5).map_or(0, |r| usize::from(*r));
        if rank != 1 {
            return Err(ArrayError::WrongRank {
                expected: 1,
                found: rank,
            });
        }
        let found = a.elements.elem_type();
        if found != E::TYPE {
            return Err(ArrayError::WrongElemType {
                expected: E::TYPE,
                found,
            });
        }
        match Arc::try_unwrap(a) {
            Ok(owned) => E::from_elements(owned.elements).map_err(|e| ArrayError::WrongElemType {
                expected: E::TYPE,
                found: e.elem_type(),
            }),
            Err(shared) => {
                E::slice_of(&shared.elements)
                    .map(<[E]>::to_vec)
                    .ok_or(ArrayError::WrongElemType {
                        expected: E::TYPE,
                        found,
                    })
            }
        }
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self(Repr::Raw(b))
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Self(Repr::Raw(Bytes::from(v)))
    }
}

impl From<&'static [u8]> for Payload {
    fn from(v: &'static [u8]) -> Self {
        Self(Repr::Raw(Bytes::from_static(v)))
    }
}

impl From<&'static str> for Payload {
    fn from(v: &'static str) -> Self {
        Self(Repr::Raw(Bytes::from_static(v.as_bytes())))
    }
}

impl PartialEq for Payload {
    /// Equal wire bytes.
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Raw(a), Repr::Raw(b)) => a == b,
            _ => self.len() == other.len() && self.to_bytes() == other.to_bytes(),
        }
    }
}

impl Eq for Payload {}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Repr::Raw(b) if b.len() <= 32 => write!(f, "Payload({b:?})"),
            Repr::Raw(b) => write!(f, "Payload({} bytes)", b.len()),
            Repr::Array(a) => write!(
                f,
                "Payload(array of {} {}, {} bytes)",
                a.elements.len(),
                a.elements.elem_type(),
                self.len()
            ),
        }
    }
}

/// Up to this many bytes are reserved when the header arrives; a larger
/// payload gets the rest of its buffer once this much has actually arrived.
/// A peer that announces 500 MiB and sends nothing thus costs us 16 MiB, not
/// 500. (Growing a large buffer is a `mremap` with glibc, not a copy.)
pub const EAGER_RESERVE: u64 = 16 * 1024 * 1024;

/// Checks an outgoing payload against the maximum message size, before
/// anything is sent (promise C5).
pub fn check_outgoing(len: u64, limit: u64) -> Result<(), WireError> {
    if len > limit {
        return Err(WireError::PayloadTooLarge {
            announced: len,
            limit,
        });
    }
    Ok(())
}

/// Collects exactly `announced` payload bytes: a numeric array (one whose
/// header checks out) into a typed vector, anything else into one buffer.
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
    received: u64,
    into: Sink,
}

#[derive(Debug)]
enum Sink {
    /// Not yet known: the first bytes, until an array header would be
    /// complete (or is ruled out).
    Start(Vec<u8>),
    /// Not an array: the bytes so far.
    Raw(Vec<u8>),
    /// An array: its header and the elements so far.
    Array {
        head: Vec<u8>,
        elements: Elements,
        count: usize,
    },
}

/// The eager reservation in bytes for a payload of `announced` bytes.
fn eager(announced: u64) -> usize {
    announced.min(EAGER_RESERVE) as usize
}

impl PayloadAssembler {
    /// Starts a payload of `announced` bytes; refused if over `limit`.
    pub fn new(announced: u64, limit: u64) -> Result<Self, WireError> {
        check_outgoing(announced, limit)?;
        let into = if TYPED {
            Sink::Start(Vec::with_capacity(array::header_len(array::MAX_RANK)))
        } else {
            Sink::Raw(Vec::with_capacity(eager(announced)))
        };
        Ok(Self {
            announced,
            received: 0,
            into,
        })
    }

    /// Bytes still expected.
    pub fn remaining(&self) -> u64 {
        self.announced - self.received
    }

    /// Appends a chunk. More bytes than announced is an error, and nothing of
    /// the offending chunk is kept.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), WireError> {
        if chunk.len() as u64 > self.remaining() {
            return Err(WireError::PayloadOverrun {
                announced: self.announced,
            });
        }
        self.received += chunk.len() as u64;
        let total = self.announced as usize;
        match &mut self.into {
            Sink::Raw(buf) => append(buf, chunk, total),
            Sink::Array {
                head,
                elements,
                count,
            } => {
                let at = (self.received as usize) - chunk.len() - head.len();
                elements.write_at(at, chunk, *count);
            }
            Sink::Start(first) => {
                first.extend_from_slice(chunk);
                if let Some(next) = Self::decide(first, total) {
                    self.into = next;
                }
            }
        }
        Ok(())
    }

    /// Once `first` holds enough to tell, what the payload is received into
    /// (with `first` moved there).
    fn decide(first: &mut Vec<u8>, total: usize) -> Option<Sink> {
        let complete = first.len() >= total;
        let header = match array::parse_header(first, total, None) {
            Ok(h) => h,
            // Not all of the header yet (a rank is known once 8 bytes are).
            Err(ArrayError::TooShort { .. }) if !complete => return None,
            // Anything else is decoded, and reported, by the consumer.
            Err(_) => {
                let mut buf = std::mem::take(first);
                buf.reserve_exact(eager(total as u64).saturating_sub(buf.len()));
                return Some(Sink::Raw(buf));
            }
        };
        let size = header.elem.size();
        let reserve = header.elements.min(EAGER_RESERVE as usize / size);
        let mut elements = Elements::with_capacity(header.elem, reserve);
        let head = first[..header.len].to_vec();
        if first.len() > header.len {
            elements.write_at(0, &first[header.len..], header.elements);
        }
        Some(Sink::Array {
            head,
            elements,
            count: header.elements,
        })
    }

    /// The complete payload; an error if fewer bytes than announced arrived.
    pub fn finish(self) -> Result<Payload, WireError> {
        if self.remaining() != 0 {
            return Err(WireError::PayloadTruncated {
                received: self.received,
                announced: self.announced,
            });
        }
        Ok(match self.into {
            Sink::Start(b) | Sink::Raw(b) => Payload::from(b),
            Sink::Array { head, elements, .. } => Payload(Repr::Array(Arc::new(TypedArray {
                head: Bytes::from(head),
                elements,
            }))),
        })
    }
}

/// Appends `chunk` to `buf`, reserving the rest of a `total`-byte payload
/// in one step when the first reservation runs out.
fn append(buf: &mut Vec<u8>, chunk: &[u8], total: usize) {
    if buf.capacity() - buf.len() < chunk.len() {
        buf.reserve_exact(total - buf.len());
    }
    buf.extend_from_slice(chunk);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assemble(bytes: &[u8], cuts: &[usize]) -> Payload {
        let mut p = PayloadAssembler::new(bytes.len() as u64, u64::MAX).unwrap();
        let mut at = 0;
        for c in cuts {
            let end = (at + c % 97).min(bytes.len());
            p.push(&bytes[at..end]).unwrap();
            at = end;
        }
        p.push(&bytes[at..]).unwrap();
        p.finish().unwrap()
    }

    #[test]
    fn a_received_array_is_typed_and_taken_without_a_copy() {
        let v: Vec<f32> = (0..10_000).map(|i| i as f32).collect();
        let wire = array::encode_vec(&v);
        let p = assemble(&wire, &[3, 5, 1, 90, 7]);
        assert!(p.is_typed());
        assert_eq!(p.len(), wire.len());
        assert_eq!(p.to_bytes(), wire);
        let held = p.clone();
        // Shared: a copy; the last holder: the vector itself.
        assert_eq!(held.into_vec::<f32>().unwrap(), v);
        let ptr = match &p.0 {
            Repr::Array(a) => a.elements.native_bytes().as_ptr(),
            Repr::Raw(_) => unreachable!(),
        };
        let back = p.into_vec::<f32>().unwrap();
        assert_eq!(back.as_ptr().cast::<u8>(), ptr);
        assert_eq!(back, v);
    }

    #[test]
    fn wrong_types_and_ranks_are_errors() {
        let p = Payload::from_vec(vec![1u64, 2]);
        assert_eq!(
            p.clone().into_vec::<f64>(),
            Err(ArrayError::WrongElemType {
                expected: array::ElemType::F64,
                found: array::ElemType::U64
            })
        );
        let m = array::encode_shaped(&[2, 2], &[0i32; 4]);
        let p = assemble(&m, &[]);
        assert!(p.is_typed(), "a rank-2 array is received typed too");
        assert_eq!(p.to_bytes(), m);
        assert_eq!(
            p.into_vec::<i32>(),
            Err(ArrayError::WrongRank {
                expected: 1,
                found: 2
            })
        );
        // msgpack stays raw; taking it as an array is the decoder's error.
        let mp = rmp_serde::to_vec(&vec![1f32, 2.0]).unwrap();
        let p = assemble(&mp, &[1]);
        assert!(!p.is_typed());
        assert!(matches!(
            p.into_vec::<f32>(),
            Err(ArrayError::BadMagic { .. })
        ));
    }

    #[test]
    fn parts_are_the_wire_bytes() {
        let p = Payload::from_vec(vec![1.5f64, -2.0]);
        let joined: Vec<u8> = p.parts().iter().flat_map(|b| b.to_vec()).collect();
        assert_eq!(joined, array::encode_vec(&[1.5f64, -2.0]));
        assert_eq!(p, Payload::from(Bytes::from(joined)));
        let empty = PayloadAssembler::new(0, 10).unwrap().finish().unwrap();
        assert!(empty.is_empty() && !empty.is_typed());
    }

    proptest! {
        /// However a payload is cut into chunks, what is assembled is its
        /// bytes: typed exactly when the bytes are a well-formed array, and
        /// taken as an array with the same result as the decoder's.
        #[test]
        fn assembly_keeps_the_bytes_and_the_decoders_verdict(
            v in proptest::collection::vec(any::<u32>(), 0..200),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
            cut in any::<usize>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..20),
            junk in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut b = array::encode_vec(&v);
            for (at, x) in flips {
                let n = b.len();
                b[at % n] ^= x;
            }
            let n = b.len();
            b.truncate(cut % (n + 1));
            for bytes in [b, junk] {
                let p = assemble(&bytes, &cuts);
                prop_assert_eq!(p.to_bytes(), Bytes::from(bytes.clone()));
                prop_assert_eq!(p.len(), bytes.len());
                let well_formed = array::parse_header(&bytes, bytes.len(), None).is_ok();
                prop_assert_eq!(p.is_typed(), well_formed && TYPED);
                prop_assert_eq!(p.clone().into_vec::<f32>(), array::decode_vec::<f32>(&bytes));
                prop_assert_eq!(p.into_vec::<u32>(), array::decode_vec::<u32>(&bytes));
            }
        }
    }
}
