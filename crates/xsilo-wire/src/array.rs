//! Numeric arrays as raw little-endian bytes with a small checked header
//! (promise L2).
//!
//! Model weights and gradients are large arrays of one element type. In
//! msgpack every element carries a tag and is decoded one at a time (a
//! 1M-element `Vec<f32>` is 5,000,005 bytes and costs 15-30 ms to encode and
//! decode); here the elements are copied as they lie in memory, after a
//! header that says what they are:
//!
//! ```text
//! offset  size       field
//! 0       4          magic  b"XSA\x01"  (xsilo array, layout 1)
//! 4       1          element type (ElemType: 1 f32, 2 f64, 3 i32, 4 i64, 5 u32, 6 u64)
//! 5       1          rank r (0..=MAX_RANK; a Vec has rank 1)
//! 6       2          reserved, zero
//! 8       8 r        the shape: r dimensions, u64 little-endian, row-major
//! 8+8r    n size     the elements, little-endian, n = the product of the dimensions
//! ```
//!
//! A payload is peer input: [`decode`] checks the magic, that the element
//! type is the one expected, the rank, that the data length is a multiple of
//! the element size and equals the element count the shape announces (with
//! overflow checked), and returns an [`ArrayError`] otherwise. It never
//! panics and allocates only once the lengths agree (the payload itself is
//! already bounded by the maximum message size).
//!
//! ```
//! use xsilo_wire::array::{decode_vec, encode_vec, ArrayError, ElemType};
//!
//! let bytes = encode_vec(&[1.5f32, -2.0, 3.25]);
//! assert_eq!(bytes.len(), 16 + 3 * 4);
//! assert_eq!(decode_vec::<f32>(&bytes).unwrap(), vec![1.5, -2.0, 3.25]);
//! assert_eq!(
//!     decode_vec::<i32>(&bytes),
//!     Err(ArrayError::WrongElemType { expected: ElemType::I32, found: ElemType::F32 }),
//! );
//! ```

use thiserror::Error;

/// The magic that opens every array payload: "XSA" and the layout version.
pub const MAGIC: [u8; 4] = *b"XSA\x01";

/// The highest rank a payload may announce.
pub const MAX_RANK: usize = 8;

/// The fixed part of the header, before the dimensions.
const FIXED: usize = 8;

/// The element type of an array payload, as carried in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ElemType {
    /// `f32` (code 1).
    F32,
    /// `f64` (code 2).
    F64,
    /// `i32` (code 3).
    I32,
    /// `i64` (code 4).
    I64,
    /// `u32` (code 5).
    U32,
    /// `u64` (code 6).
    U64,
}

impl ElemType {
    /// The code carried in the header.
    pub fn code(self) -> u8 {
        match self {
            Self::F32 => 1,
            Self::F64 => 2,
            Self::I32 => 3,
            Self::I64 => 4,
            Self::U32 => 5,
            Self::U64 => 6,
        }
    }

    /// The element type of a header code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => Self::F32,
            2 => Self::F64,
            3 => Self::I32,
            4 => Self::I64,
            5 => Self::U32,
            6 => Self::U64,
            _ => return None,
        })
    }

    /// The size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F64 | Self::I64 | Self::U64 => 8,
        }
    }

    /// The Rust name of the element type.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F64 => "f64",
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::U32 => "u32",
            Self::U64 => "u64",
        }
    }
}

impl std::fmt::Display for ElemType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a payload is not the array expected. Every variant is the sender's
/// fault (or a different driver in the sender); none is a bug here.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ArrayError {
    /// Shorter than the header it must start with.
    #[error("array payload of {len} bytes is shorter than its {needed}-byte header")]
    TooShort {
        /// The payload's length.
        len: usize,
        /// The header length needed.
        needed: usize,
    },
    /// The payload does not start with [`MAGIC`]: not an array payload (a
    /// sender encoding this value another way, e.g. as msgpack).
    #[error("not an array payload (magic {found:02x?}, expected {MAGIC:02x?})")]
    BadMagic {
        /// The first bytes found.
        found: [u8; 4],
    },
    /// An element type code this version does not know.
    #[error("unknown array element type code {0}")]
    UnknownElemType(u8),
    /// An array of another element type than the one expected.
    #[error("array of {found} where {expected} was expected")]
    WrongElemType {
        /// The type the receiver decodes into.
        expected: ElemType,
        /// The type the header announces.
        found: ElemType,
    },
    /// A rank above [`MAX_RANK`], or not the rank the receiver decodes into.
    #[error("array of rank {found} where rank {expected} was expected")]
    WrongRank {
        /// The rank expected (for a `Vec`, 1; otherwise the limit).
        expected: usize,
        /// The rank the header announces.
        found: usize,
    },
    /// The reserved header bytes are not zero.
    #[error("array header has reserved bytes {0:02x?}, expected zero")]
    Reserved([u8; 2]),
    /// The data is not a whole number of elements.
    #[error("array data of {len} bytes is not a multiple of the {size}-byte {elem} element")]
    Ragged {
        /// Bytes of data after the header.
        len: usize,
        /// The element size.
        size: usize,
        /// The element type.
        elem: ElemType,
    },
    /// The shape announces another element count than the data holds (or
    /// more than can be counted).
    #[error("array shape {shape:?} does not match the {elements} elements of its data")]
    ShapeMismatch {
        /// The shape announced.
        shape: Vec<u64>,
        /// The elements the data holds.
        elements: usize,
    },
}

/// A number that crosses as an array element. Sealed: implemented for
/// `f32`, `f64`, `i32`, `i64`, `u32` and `u64`.
pub trait Element: bytemuck::Pod + Default + Send + Sync + 'static + private::Sealed {
    /// The element type in the header.
    const TYPE: ElemType;
    /// Writes the element's little-endian bytes into `out` (exactly its size).
    fn write_le(self, out: &mut [u8]);
    /// Reads an element from its little-endian bytes (exactly its size).
    fn read_le(bytes: &[u8]) -> Self;
    /// Wraps a vector of this type.
    fn into_elements(v: Vec<Self>) -> Elements;
    /// Unwraps a vector of this type, or gives `e` back.
    fn from_elements(e: Elements) -> Result<Vec<Self>, Elements>;
    /// The elements, if they are of this type.
    fn slice_of(e: &Elements) -> Option<&[Self]>;
}

mod private {
    pub trait Sealed {}
}

/// The elements of a numeric array, kept as the typed vector they were made
/// from (or received into): see [`crate::payload::Payload`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Elements {
    /// `f32` elements.
    F32(Vec<f32>),
    /// `f64` elements.
    F64(Vec<f64>),
    /// `i32` elements.
    I32(Vec<i32>),
    /// `i64` elements.
    I64(Vec<i64>),
    /// `u32` elements.
    U32(Vec<u32>),
    /// `u64` elements.
    U64(Vec<u64>),
}

macro_rules! element {
    ($($t:ty => $e:ident),+) => {$(
        impl private::Sealed for $t {}
        impl Element for $t {
            const TYPE: ElemType = ElemType::$e;
            #[inline(always)]
            fn write_le(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes());
            }
            #[inline(always)]
            fn read_le(bytes: &[u8]) -> Self {
                let mut b = [0u8; std::mem::size_of::<$t>()];
                b.copy_from_slice(bytes);
                <$t>::from_le_bytes(b)
            }
            fn into_elements(v: Vec<Self>) -> Elements {
                Elements::$e(v)
            }
            fn from_elements(e: Elements) -> Result<Vec<Self>, Elements> {
                match e {
                    Elements::$e(v) => Ok(v),
                    other => Err(other),
                }
            }
            fn slice_of(e: &Elements) -> Option<&[Self]> {
                match e {
                    Elements::$e(v) => Some(v),
                    _ => None,
                }
            }
        }
    )+};
}
element!(f32 => F32, f64 => F64, i32 => I32, i64 => I64, u32 => U32, u64 => U64);

/// Applies `$body` to the typed vector inside an [`Elements`].
macro_rules! each_elements {
    ($e:expr, $v:ident => $body:expr) => {
        match $e {
            Elements::F32($v) => $body,
            Elements::F64($v) => $body,
            Elements::I32($v) => $body,
            Elements::I64($v) => $body,
            Elements::U32($v) => $body,
            Elements::U64($v) => $body,
        }
    };
}

impl Elements {
    /// A zeroed vector of `n` elements of type `elem`, with room reserved
    /// for `reserve` elements (at least `n`).
    pub(crate) fn with_capacity(elem: ElemType, reserve: usize) -> Self {
        match elem {
            ElemType::F32 => Self::F32(Vec::with_capacity(reserve)),
            ElemType::F64 => Self::F64(Vec::with_capacity(reserve)),
            ElemType::I32 => Self::I32(Vec::with_capacity(reserve)),
            ElemType::I64 => Self::I64(Vec::with_capacity(reserve)),
            ElemType::U32 => Self::U32(Vec::with_capacity(reserve)),
            ElemType::U64 => Self::U64(Vec::with_capacity(reserve)),
        }
    }

    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        match self {
            Self::F32(_) => ElemType::F32,
            Self::F64(_) => ElemType::F64,
            Self::I32(_) => ElemType::I32,
            Self::I64(_) => ElemType::I64,
            Self::U32(_) => ElemType::U32,
            Self::U64(_) => ElemType::U64,
        }
    }

    /// How many elements.
    pub fn len(&self) -> usize {
        each_elements!(self, v => v.len())
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements' bytes as they lie in memory: their little-endian
    /// encoding on a little-endian machine (the only kind on which the
    /// payload keeps arrays typed, see [`crate::payload::Payload`]).
    pub fn native_bytes(&self) -> &[u8] {
        each_elements!(self, v => bytemuck::cast_slice(v.as_slice()))
    }

    /// Writes `chunk` at byte offset `at` of the elements, first growing
    /// them (zeroed) to cover it; room for `total` elements is reserved in
    /// one step when the first reservation runs out.
    pub(crate) fn write_at(&mut self, at: usize, chunk: &[u8], total: usize) {
        fn write<E: Element>(v: &mut Vec<E>, at: usize, chunk: &[u8], total: usize) {
            let end = at + chunk.len();
            let need = end.div_ceil(std::mem::size_of::<E>());
            if v.len() < need {
                if v.capacity() < need {
                    v.reserve_exact(total.max(need) - v.len());
                }
                v.resize(need, E::default());
            }
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(v.as_mut_slice());
            bytes[at..end].copy_from_slice(chunk);
        }
        each_elements!(self, v => write(v, at, chunk, total))
    }
}

/// The header length for a rank.
pub fn header_len(rank: usize) -> usize {
    FIXED + 8 * rank
}

/// Encodes `data` with `shape` (row-major). The caller guarantees that the
/// product of `shape` is `data.len()` and that the rank is at most
/// [`MAX_RANK`]; [`encode_vec`] is the rank-1 case.
pub fn encode_shaped<T: Element>(shape: &[u64], data: &[T]) -> Vec<u8> {
    let size = T::TYPE.size();
    let mut out = header(T::TYPE, shape, data.len() * size);
    let head = out.len();
    // Zeroed memory comes from the allocator as fresh pages: no fill pass.
    out.resize(head + data.len() * size, 0);
    for (slot, x) in out[head..].chunks_exact_mut(size).zip(data) {
        x.write_le(slot);
    }
    out
}

/// The header of an array of `elem` with `shape` (the caller guarantees a
/// rank of at most [`MAX_RANK`]), in a buffer with room for `data_len` more
/// bytes: the elements that follow it.
pub fn header(elem: ElemType, shape: &[u64], data_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(header_len(shape.len()) + data_len);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&[elem.code(), shape.len() as u8, 0, 0]);
    for d in shape {
        out.extend_from_slice(&d.to_le_bytes());
    }
    out
}

/// Encodes a one-dimensional array.
pub fn encode_vec<T: Element>(data: &[T]) -> Vec<u8> {
    encode_shaped(&[data.len() as u64], data)
}

/// What a checked array header announces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The element type.
    pub elem: ElemType,
    /// The dimensions, row-major.
    pub shape: Vec<u64>,
    /// The header's length in bytes (where the elements begin).
    pub len: usize,
    /// The element count (the product of the dimensions).
    pub elements: usize,
}

/// Checks the header at the start of `bytes` for a payload of `total`
/// bytes (`bytes` may hold only the header's part of it), in the order of
/// the module's documentation. With `expected`, an element type other than
/// it is [`ArrayError::WrongElemType`].
pub fn parse_header(
    bytes: &[u8],
    total: usize,
    expected: Option<ElemType>,
) -> Result<Header, ArrayError> {
    let have = bytes.len().min(total);
    let (fixed, _) = bytes[..have]
        .split_at_checked(FIXED)
        .ok_or(ArrayError::TooShort {
            len: have,
            needed: FIXED,
        })?;
    let found = [fixed[0], fixed[1], fixed[2], fixed[3]];
    if found != MAGIC {
        return Err(ArrayError::BadMagic { found });
    }
    let elem = ElemType::from_code(fixed[4]).ok_or(ArrayError::UnknownElemType(fixed[4]))?;
    if let Some(expected) = expected.filter(|t| *t != elem) {
        return Err(ArrayError::WrongElemType {
            expected,
            found: elem,
        });
    }
    let rank = usize::from(fixed[5]);
    if rank > MAX_RANK {
        return Err(ArrayError::WrongRank {
            expected: MAX_RANK,
            found: rank,
        });
    }
    if fixed[6..8] != [0, 0] {
        return Err(ArrayError::Reserved([fixed[6], fixed[7]]));
    }
    let head = header_len(rank);
    let header =
        bytes[..have]
            .get(..head)
            .filter(|_| total >= head)
            .ok_or(ArrayError::TooShort {
                len: have,
                needed: head,
            })?;
    let shape: Vec<u64> = header[FIXED..].chunks_exact(8).map(u64::read_le).collect();
    let size = elem.size();
    let data = total - head;
    if data % size != 0 {
        return Err(ArrayError::Ragged {
            len: data,
            size,
            elem,
        });
    }
    let elements = data / size;
    let announced = shape.iter().try_fold(1u64, |n, d| n.checked_mul(*d));
    if announced != Some(elements as u64) {
        return Err(ArrayError::ShapeMismatch { shape, elements });
    }
    Ok(Header {
        elem,
        shape,
        len: head,
        elements,
    })
}

/// Decodes an array of `T` of any rank up to [`MAX_RANK`]: its shape and
/// its elements in row-major order. Every check of the module's
/// documentation applies.
pub fn decode<T: Element>(bytes: &[u8]) -> Result<(Vec<u64>, Vec<T>), ArrayError> {
    let header = parse_header(bytes, bytes.len(), Some(T::TYPE))?;
    let data = &bytes[header.len..];
    // One pass, no zeroing first: the length is known, the loop copies.
    let mut out = Vec::with_capacity(header.elements);
    out.extend(data.chunks_exact(T::TYPE.size()).map(T::read_le));
    Ok((header.shape, out))
}

/// Decodes a one-dimensional array (rank 1).
pub fn decode_vec<T: Element>(bytes: &[u8]) -> Result<Vec<T>, ArrayError> {
    let rank = bytes.get(5).map_or(1, |r| usize::from(*r));
    if bytes.len() >= FIXED && bytes[..4] == MAGIC && rank != 1 && rank <= MAX_RANK {
        return Err(ArrayError::WrongRank {
            expected: 1,
            found: rank,
        });
    }
    decode::<T>(bytes).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn layout_is_as_documented() {
        let b = encode_vec(&[1u32, 0x0102_0304]);
        assert_eq!(&b[..8], &[b'X', b'S', b'A', 1, 5, 1, 0, 0]);
        assert_eq!(&b[8..16], &2u64.to_le_bytes());
        assert_eq!(&b[16..], &[1, 0, 0, 0, 4, 3, 2, 1]);
        let m = encode_shaped(&[2, 3], &[0f64; 6]);
        assert_eq!(m.len(), 8 + 16 + 48);
        assert_eq!(decode::<f64>(&m).unwrap(), (vec![2, 3], vec![0.0; 6]));
        assert_eq!(
            decode_vec::<f64>(&m),
            Err(ArrayError::WrongRank {
                expected: 1,
                found: 2
            })
        );
    }

    #[test]
    fn every_check_has_its_error() {
        let good = encode_vec(&[1.0f32, 2.0]);
        assert_eq!(
            decode_vec::<f32>(&good[..5]),
            Err(ArrayError::TooShort { len: 5, needed: 8 })
        );
        assert_eq!(
            decode_vec::<f32>(&good[..12]),
            Err(ArrayError::TooShort {
                len: 12,
                needed: 16
            })
        );
        let mut b = good.clone();
        b[0] = 0x92; // a msgpack array
        assert!(matches!(
            decode_vec::<f32>(&b),
            Err(ArrayError::BadMagic { .. })
        ));
        let mut b = good.clone();
        b[4] = 9;
        assert_eq!(decode_vec::<f32>(&b), Err(ArrayError::UnknownElemType(9)));
        let mut b = good.clone();
        b[5] = 200;
        assert_eq!(
            decode_vec::<f32>(&b),
            Err(ArrayError::WrongRank {
                expected: 8,
                found: 200
            })
        );
        let mut b = good.clone();
        b[7] = 1;
        assert_eq!(decode_vec::<f32>(&b), Err(ArrayError::Reserved([0, 1])));
        assert_eq!(
            decode_vec::<f32>(&good[..good.len() - 1]),
            Err(ArrayError::Ragged {
                len: 7,
                size: 4,
                elem: ElemType::F32
            })
        );
        assert_eq!(
            decode_vec::<f32>(&good[..good.len() - 4]),
            Err(ArrayError::ShapeMismatch {
                shape: vec![2],
                elements: 1
            })
        );
        // A shape whose product overflows.
        let mut b = encode_shaped(&[1, 1], &[0u64]);
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        b[16..24].copy_from_slice(&3u64.to_le_bytes());
        assert!(matches!(
            decode::<u64>(&b),
            Err(ArrayError::ShapeMismatch { elements: 1, .. })
        ));
    }

    #[test]
    fn special_floats_and_extremes_cross_bit_exact() {
        let v = [f32::NAN, f32::INFINITY, -0.0, f32::MIN_POSITIVE, f32::MAX];
        let back = decode_vec::<f32>(&encode_vec(&v)).unwrap();
        let bits = |s: &[f32]| s.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&v));
        let i = [i64::MIN, -1, 0, i64::MAX];
        assert_eq!(decode_vec::<i64>(&encode_vec(&i)).unwrap(), i);
        assert_eq!(decode_vec::<u64>(&encode_vec::<u64>(&[])).unwrap(), vec![]);
    }

    fn round_trip<T: Element + PartialEq + std::fmt::Debug>(v: Vec<T>) {
        let bytes = encode_vec(&v);
        assert_eq!(bytes.len(), 16 + v.len() * T::TYPE.size());
        assert_eq!(decode_vec::<T>(&bytes).unwrap(), v);
    }

    proptest! {
        #[test]
        fn vectors_round_trip(
            f in proptest::collection::vec(-1e30f32..1e30, 0..300),
            d in proptest::collection::vec(any::<f64>().prop_filter("not NaN", |x| !x.is_nan()), 0..300),
            i in proptest::collection::vec(any::<i32>(), 0..300),
            l in proptest::collection::vec(any::<i64>(), 0..300),
            u in proptest::collection::vec(any::<u32>(), 0..300),
            q in proptest::collection::vec(any::<u64>(), 0..300),
        ) {
            round_trip(f);
            round_trip(d);
            round_trip(i);
            round_trip(l);
            round_trip(u);
            round_trip(q);
        }

        #[test]
        fn shaped_arrays_round_trip(dims in proptest::collection::vec(0u64..5, 0..=4)) {
            let n = dims.iter().product::<u64>() as usize;
            let data: Vec<i32> = (0..n as i32).collect();
            let bytes = encode_shaped(&dims, &data);
            prop_assert_eq!(decode::<i32>(&bytes).unwrap(), (dims, data));
        }

        /// Arbitrary bytes, and arbitrary corruptions of a valid payload,
        /// decode to a value or an error, never a panic, and whatever
        /// decodes is consistent with the input's length.
        #[test]
        fn malformed_payloads_are_errors_not_panics(
            junk in proptest::collection::vec(any::<u8>(), 0..200),
            v in proptest::collection::vec(any::<u32>(), 0..50),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            cut in any::<usize>(),
        ) {
            let _ = decode::<f32>(&junk);
            let _ = decode_vec::<u64>(&junk);
            let mut b = encode_vec(&v);
            for (at, x) in flips {
                let n = b.len();
                b[at % n] ^= x;
            }
            let n = b.len();
            b.truncate(cut % (n + 1));
            if let Ok((shape, data)) = decode::<u32>(&b) {
                prop_assert_eq!(header_len(shape.len()) + data.len() * 4, b.len());
            }
            let _ = decode_vec::<i32>(&b);
        }
    }
}
