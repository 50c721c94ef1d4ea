//! How values cross silos: msgpack (rmp-serde) for typed values, raw bytes
//! for `bytes::Bytes` and `Vec<u8>` values (no re-encoding).

use std::any::{Any, TypeId};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value that can be the result of a federated call: serialisable, owned,
/// sendable. Implemented for every such type.
///
/// `bytes::Bytes` and `Vec<u8>` values travel as their raw bytes; every other
/// type as msgpack, with structs as maps.
pub trait Value: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Value for T {}

pub(crate) fn encode<T: Value>(value: &T) -> Result<Bytes, String> {
    let any = value as &dyn Any;
    if let Some(b) = any.downcast_ref::<Bytes>() {
        return Ok(b.clone());
    }
    if let Some(v) = any.downcast_ref::<Vec<u8>>() {
        return Ok(Bytes::copy_from_slice(v));
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
}
