//! How values cross silos: msgpack (rmp-serde) for typed values, raw bytes
//! for `bytes::Bytes` and `Vec<u8>` values (no re-encoding), and raw
//! little-endian arrays behind a checked header for numeric vectors
//! (`xsilo_wire::array`, MISSION L2).

use std::any::{Any, TypeId};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use xsilo_wire::array::{self, Element};

/// A value that can be the result of a federated call: serialisable, owned,
/// sendable. Implemented for every such type.
///
/// How a value crosses silos is chosen by its exact type:
///
/// | type | on the wire |
/// |---|---|
/// | `bytes::Bytes`, `Vec<u8>` | its raw bytes |
/// | `Vec<f32>`, `Vec<f64>`, `Vec<i32>`, `Vec<i64>`, `Vec<u32>`, `Vec<u64>` | a numeric array: a 16-byte header (element type, length) and the elements as little-endian bytes, copied without per-element encoding ([`xsilo_wire::array`]) |
/// | anything else | msgpack, structs as maps |
///
/// Only the top-level type counts: a `(Vec<f32>, u64)`, a `Vec<Vec<f32>>`
/// or a struct holding a `Vec<f32>` is msgpack throughout. Return model
/// weights as a plain `Vec<f32>` (one FedObject per array, see
/// [`crate::Returns`]) to move them at memory speed. A numeric array
/// received from a peer is checked (element type, length, shape) before it
/// is used; a mismatch is a `Decode` error, never a panic.
pub trait Value: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Value for T {}

/// Encodes `value` as a numeric array if it is a `Vec` of one of the
/// [`Element`] types.
fn encode_array<T: 'static>(value: &T) -> Option<Vec<u8>> {
    fn as_vec<T: 'static, E: Element>(value: &T) -> Option<Vec<u8>> {
        (value as &dyn Any)
            .downcast_ref::<Vec<E>>()
            .map(|v| array::encode_vec(v))
    }
    as_vec::<T, f32>(value)
        .or_else(|| as_vec::<T, f64>(value))
        .or_else(|| as_vec::<T, i32>(value))
        .or_else(|| as_vec::<T, i64>(value))
        .or_else(|| as_vec::<T, u32>(value))
        .or_else(|| as_vec::<T, u64>(value))
}

/// Decodes `bytes` as a numeric array if `T` is a `Vec` of one of the
/// [`Element`] types.
fn decode_array<T: 'static>(bytes: &[u8]) -> Option<Result<T, String>> {
    fn as_vec<T: 'static, E: Element>(bytes: &[u8]) -> Option<Result<T, String>> {
        if TypeId::of::<T>() != TypeId::of::<Vec<E>>() {
            return None;
        }
        Some(
            array::decode_vec::<E>(bytes)
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    (Box::new(v) as Box<dyn Any>)
                        .downcast::<T>()
                        .map(|b| *b)
                        .map_err(|_| "internal: array downcast".to_owned())
                }),
        )
    }
    as_vec::<T, f32>(bytes)
        .or_else(|| as_vec::<T, f64>(bytes))
        .or_else(|| as_vec::<T, i32>(bytes))
        .or_else(|| as_vec::<T, i64>(bytes))
        .or_else(|| as_vec::<T, u32>(bytes))
        .or_else(|| as_vec::<T, u64>(bytes))
}

pub(crate) fn encode<T: Value>(value: &T) -> Result<Bytes, String> {
    let any = value as &dyn Any;
    if let Some(b) = any.downcast_ref::<Bytes>() {
        return Ok(b.clone());
    }
    if let Some(v) = any.downcast_ref::<Vec<u8>>() {
        return Ok(Bytes::copy_from_slice(v));
    }
    if let Some(encoded) = encode_array(value) {
        // Allocated at its exact length: nothing to shrink.
        return Ok(Bytes::from(encoded));
    }
    let mut encoded = rmp_serde::to_vec_named(value).map_err(|e| e.to_string())?;
    // The encoder grows its buffer by doubling, and `Bytes` keeps a
    // buffer's capacity: without this a 5 MB value held for a push or a
    // consumer would pin 8 MB. Shrinking in place does not copy.
    encoded.shrink_to_fit();
    Ok(Bytes::from(encoded))
}

/// Moves a value encoded by [`encode`] back into a `T`.
pub(crate) fn decode<T: Value>(bytes: Bytes) -> Result<T, String> {
    if TypeId::of::<T>() == TypeId::of::<Bytes>() {
        let boxed: Box<dyn Any> = Box::new(bytes);
        return boxed
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| "internal: Bytes downcast".to_owned());
    }
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        let boxed: Box<dyn Any> = Box::new(Vec::from(bytes));
        return boxed
            .downcast::<T>()
            .map(|b| *b)
            .map_err(|_| "internal: Vec<u8> downcast".to_owned());
    }
    if let Some(decoded) = decode_array::<T>(&bytes) {
        return decoded;
    }
    rmp_serde::from_slice(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_are_not_reencoded() {
        let b = Bytes::from_static(b"\x00\x01raw");
        let enc = encode(&b).unwrap();
        assert_eq!(enc, b);
        assert_eq!(enc.as_ptr(), b.as_ptr(), "Bytes must be shared, not copied");
        assert_eq!(decode::<Bytes>(enc).unwrap(), b);
        let v = vec![1u8, 2, 3];
        assert_eq!(&encode(&v).unwrap()[..], &[1, 2, 3]);
        assert_eq!(
            decode::<Vec<u8>>(Bytes::from_static(&[1, 2, 3])).unwrap(),
            v
        );
    }

    #[test]
    fn typed_values_round_trip_and_mismatches_are_errors() {
        let enc = encode(&(5i64, "five".to_owned())).unwrap();
        assert_eq!(
            decode::<(i64, String)>(enc.clone()).unwrap(),
            (5, "five".into())
        );
        assert!(decode::<Vec<String>>(enc).is_err());
    }

    #[test]
    fn numeric_vectors_take_the_array_path() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let enc = encode(&v).unwrap();
        assert_eq!(
            enc.len(),
            16 + 4 * v.len(),
            "raw little-endian, not msgpack"
        );
        assert_eq!(&enc[..4], &xsilo_wire::array::MAGIC);
        assert_eq!(decode::<Vec<f32>>(enc.clone()).unwrap(), v);
        macro_rules! each {
            ($($t:ty),+) => {$(
                let v: Vec<$t> = vec![1 as $t, 2 as $t, <$t>::MAX];
                let enc = encode(&v).unwrap();
                assert_eq!(enc.len(), 16 + std::mem::size_of::<$t>() * 3);
                assert_eq!(decode::<Vec<$t>>(enc).unwrap(), v);
            )+};
        }
        each!(f64, i32, i64, u32, u64);
        // Another element type, or a msgpack payload, is a clear error.
        let err = decode::<Vec<i32>>(enc).unwrap_err();
        assert_eq!(err, "array of f32 where i32 was expected");
        let msgpack = Bytes::from(rmp_serde::to_vec(&vec![1f32, 2.0]).unwrap());
        assert!(decode::<Vec<f32>>(msgpack)
            .unwrap_err()
            .contains("not an array payload"));
        // Nested containers stay msgpack.
        let nested = vec![vec![1f32]];
        let enc = encode(&nested).unwrap();
        assert_ne!(&enc[..4], &xsilo_wire::array::MAGIC);
        assert_eq!(decode::<Vec<Vec<f32>>>(enc).unwrap(), nested);
    }
}
