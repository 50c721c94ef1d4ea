//! How values cross silos: msgpack (rmp-serde) for typed values, raw bytes
//! for `bytes::Bytes` and `Vec<u8>` values (no re-encoding), and typed
//! numeric vectors, sent as raw little-endian arrays behind a checked
//! header (`xsilo_wire::array`, `xsilo_wire::payload`, promise L2).

use std::any::{Any, TypeId};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use xsilo_wire::array::Element;
use xsilo_wire::payload::Payload;

/// A value that can be the result of a federated call: serialisable, owned,
/// sendable. Implemented for every such type.
///
/// How a value crosses silos is chosen by its exact type:
///
/// | type | on the wire |
/// |---|---|
/// | `bytes::Bytes`, `Vec<u8>` | its raw bytes |
/// | `Vec<f32>`, `Vec<f64>`, `Vec<i32>`, `Vec<i64>`, `Vec<u32>`, `Vec<u64>` | a numeric array: a 16-byte header (element type, length) and the elements as little-endian bytes ([`xsilo_wire::array`]); the vector itself is what the party keeps and sends, a received one arrives straight into a vector, and a call given the last handle on it receives it without a copy ([`xsilo_wire::payload::Payload`]) |
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

/// Takes the value out of `slot` as a `U`, if `T` is `U`.
fn take_as<T: 'static, U: 'static>(slot: &mut Option<T>) -> Option<U> {
    (slot as &mut dyn Any)
        .downcast_mut::<Option<U>>()
        .and_then(Option::take)
}

/// Moves a numeric `Vec` into a typed array payload (no copy); gives any
/// other value back.
fn encode_array<T: 'static>(slot: &mut Option<T>) -> Option<Payload> {
    fn as_vec<T: 'static, E: Element>(slot: &mut Option<T>) -> Option<Payload> {
        take_as::<T, Vec<E>>(slot).map(Payload::from_vec)
    }
    as_vec::<T, f32>(slot)
        .or_else(|| as_vec::<T, f64>(slot))
        .or_else(|| as_vec::<T, i32>(slot))
        .or_else(|| as_vec::<T, i64>(slot))
        .or_else(|| as_vec::<T, u32>(slot))
        .or_else(|| as_vec::<T, u64>(slot))
}

/// Takes the numeric array of `payload` if `T` is a `Vec` of one of the
/// [`Element`] types: without a copy when the payload is its last holder.
fn decode_array<T: 'static>(payload: &mut Option<Payload>) -> Option<Result<T, String>> {
    fn as_vec<T: 'static, E: Element>(payload: &mut Option<Payload>) -> Option<Result<T, String>> {
        if TypeId::of::<T>() != TypeId::of::<Vec<E>>() {
            return None;
        }
        let payload = payload.take()?;
        Some(
            payload
                .into_vec::<E>()
                .map_err(|e| e.to_string())
                .and_then(|v| {
                    take_as::<Vec<E>, T>(&mut Some(v))
                        .ok_or_else(|| "internal: array downcast".to_owned())
                }),
        )
    }
    as_vec::<T, f32>(payload)
        .or_else(|| as_vec::<T, f64>(payload))
        .or_else(|| as_vec::<T, i32>(payload))
        .or_else(|| as_vec::<T, i64>(payload))
        .or_else(|| as_vec::<T, u32>(payload))
        .or_else(|| as_vec::<T, u64>(payload))
}

/// Encodes a value, taking it: a numeric `Vec` or a `Bytes` is kept as it
/// is, without a copy.
pub(crate) fn encode<T: Value>(value: T) -> Result<Payload, String> {
    let mut slot = Some(value);
    if let Some(b) = take_as::<T, Bytes>(&mut slot) {
        return Ok(Payload::from(b));
    }
    if let Some(v) = take_as::<T, Vec<u8>>(&mut slot) {
        return Ok(Payload::from(v));
    }
    if let Some(encoded) = encode_array(&mut slot) {
        return Ok(encoded);
    }
    let value = slot.ok_or_else(|| "internal: value taken".to_owned())?;
    let mut encoded = rmp_serde::to_vec_named(&value).map_err(|e| e.to_string())?;
    // The encoder grows its buffer by doubling, and `Bytes` keeps a
    // buffer's capacity: without this a 5 MB value held for a push or a
    // consumer would pin 8 MB. Shrinking in place does not copy.
    encoded.shrink_to_fit();
    Ok(Payload::from(encoded))
}

/// Moves a value encoded by [`encode`] (here or in a peer) back into a `T`.
pub(crate) fn decode<T: Value>(payload: Payload) -> Result<T, String> {
    if TypeId::of::<T>() == TypeId::of::<Bytes>() {
        return take_as::<Bytes, T>(&mut Some(payload.to_bytes()))
            .ok_or_else(|| "internal: Bytes downcast".to_owned());
    }
    if TypeId::of::<T>() == TypeId::of::<Vec<u8>>() {
        return take_as::<Vec<u8>, T>(&mut Some(Vec::from(payload.to_bytes())))
            .ok_or_else(|| "internal: Vec<u8> downcast".to_owned());
    }
    let mut slot = Some(payload);
    if let Some(decoded) = decode_array::<T>(&mut slot) {
        return decoded;
    }
    let payload = slot.ok_or_else(|| "internal: payload taken".to_owned())?;
    rmp_serde::from_slice(&payload.to_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bytes_are_not_reencoded() {
        let b = Bytes::from_static(b"\x00\x01raw");
        let enc = encode(b.clone()).unwrap();
        assert_eq!(enc.to_bytes(), b);
        assert_eq!(
            enc.to_bytes().as_ptr(),
            b.as_ptr(),
            "Bytes must be shared, not copied"
        );
        assert_eq!(decode::<Bytes>(enc).unwrap(), b);
        let v = vec![1u8, 2, 3];
        assert_eq!(&encode(v.clone()).unwrap().to_bytes()[..], &[1, 2, 3]);
        assert_eq!(
            decode::<Vec<u8>>(Payload::from(&[1u8, 2, 3][..])).unwrap(),
            v
        );
    }

    #[test]
    fn typed_values_round_trip_and_mismatches_are_errors() {
        let enc = encode((5i64, "five".to_owned())).unwrap();
        assert_eq!(
            decode::<(i64, String)>(enc.clone()).unwrap(),
            (5, "five".into())
        );
        assert!(decode::<Vec<String>>(enc).is_err());
    }

    #[test]
    fn numeric_vectors_take_the_array_path_without_a_copy() {
        let v: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5).collect();
        let at = v.as_ptr();
        let enc = encode(v.clone()).unwrap();
        assert_eq!(
            enc.len(),
            16 + 4 * v.len(),
            "raw little-endian, not msgpack"
        );
        assert_eq!(&enc.to_bytes()[..4], &xsilo_wire::array::MAGIC);
        assert_eq!(decode::<Vec<f32>>(enc.clone()).unwrap(), v);
        // The task's vector is what the payload keeps, and what the last
        // holder takes back.
        let moved = encode(v).unwrap();
        let back = decode::<Vec<f32>>(moved).unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(back.as_ptr(), at, "moved, not copied");
        }
        macro_rules! each {
            ($($t:ty),+) => {$(
                let v: Vec<$t> = vec![1 as $t, 2 as $t, <$t>::MAX];
                let enc = encode(v.clone()).unwrap();
                assert_eq!(enc.len(), 16 + std::mem::size_of::<$t>() * 3);
                assert_eq!(decode::<Vec<$t>>(Payload::from(enc.to_bytes())).unwrap(), v);
                assert_eq!(decode::<Vec<$t>>(enc).unwrap(), v);
            )+};
        }
        each!(f64, i32, i64, u32, u64);
        // Another element type, or a msgpack payload, is a clear error.
        let err = decode::<Vec<i32>>(enc.clone()).unwrap_err();
        assert_eq!(err, "array of f32 where i32 was expected");
        let err = decode::<Vec<i32>>(Payload::from(enc.to_bytes())).unwrap_err();
        assert_eq!(err, "array of f32 where i32 was expected");
        let msgpack = Payload::from(rmp_serde::to_vec(&vec![1f32, 2.0]).unwrap());
        assert!(decode::<Vec<f32>>(msgpack)
            .unwrap_err()
            .contains("not an array payload"));
        // Raw bytes of an array are its wire bytes.
        assert_eq!(decode::<Bytes>(enc.clone()).unwrap(), enc.to_bytes());
        // Nested containers stay msgpack.
        let nested = vec![vec![1f32]];
        let enc = encode(nested.clone()).unwrap();
        assert_ne!(&enc.to_bytes()[..4], &xsilo_wire::array::MAGIC);
        assert_eq!(decode::<Vec<Vec<f32>>>(enc).unwrap(), nested);
    }
}
