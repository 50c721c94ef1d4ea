//! Arguments of federated calls: FedObjects, alone or inside tuples, `Vec`s,
//! `Option`s and arrays (MISSION M3).

use bytes::Bytes;
use xsilo_runtime::{ObjRef, RuntimeError};

use crate::object::FedObject;
use crate::value::{decode, Value};

/// Something made of [`FedObject`]s whose values a call receives.
///
/// Implemented for `FedObject<T>` (and `&FedObject<T>` for `get`), `()`,
/// tuples of up to eight `FedArgs`, `Vec<A>`, `Option<A>` and `[A; N]`.
/// Plain values need no wrapper: capture them in the closure.
pub trait FedArgs {
    /// What the call receives: the same shape with values in place of
    /// FedObjects.
    type Value: Send + 'static;

    /// Appends the referenced objects, in order.
    fn refs(&self, out: &mut Vec<ObjRef>);

    /// Rebuilds the shape from the values, in the order of [`FedArgs::refs`].
    fn resolve(self, values: &mut std::vec::IntoIter<Bytes>) -> Result<Self::Value, RuntimeError>;
}

fn next_value<T: Value>(
    obj: &FedObject<T>,
    values: &mut std::vec::IntoIter<Bytes>,
) -> Result<T, RuntimeError> {
    let bytes = values.next().ok_or_else(|| RuntimeError::Decode {
        object: obj.id(),
        from: obj.owner().clone(),
        expected: std::any::type_name::<T>(),
        reason: "the value is missing".into(),
    })?;
    decode(bytes).map_err(|reason| RuntimeError::Decode {
        object: obj.id(),
        from: obj.owner().clone(),
        expected: std::any::type_name::<T>(),
        reason,
    })
}

impl<T: Value> FedArgs for FedObject<T> {
    type Value = T;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        out.push(self.obj_ref());
    }
    fn resolve(self, values: &mut std::vec::IntoIter<Bytes>) -> Result<T, RuntimeError> {
        next_value(&self, values)
    }
}

impl<T: Value> FedArgs for &FedObject<T> {
    type Value = T;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        out.push(self.obj_ref());
    }
    fn resolve(self, values: &mut std::vec::IntoIter<Bytes>) -> Result<T, RuntimeError> {
        next_value(self, values)
    }
}

impl FedArgs for () {
    type Value = ();
    fn refs(&self, _: &mut Vec<ObjRef>) {}
    fn resolve(self, _: &mut std::vec::IntoIter<Bytes>) -> Result<(), RuntimeError> {
        Ok(())
    }
}

impl<A: FedArgs> FedArgs for Vec<A> {
    type Value = Vec<A::Value>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        for a in self {
            a.refs(out);
        }
    }
    fn resolve(self, values: &mut std::vec::IntoIter<Bytes>) -> Result<Self::Value, RuntimeError> {
        self.into_iter().map(|a| a.resolve(values)).collect()
    }
}

impl<A: FedArgs> FedArgs for Option<A> {
    type Value = Option<A::Value>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        if let Some(a) = self {
            a.refs(out);
        }
    }
    fn resolve(self, values: &mut std::vec::IntoIter<Bytes>) -> Result<Self::Value, RuntimeError> {
        self.map(|a| a.resolve(values)).transpose()
    }
}

impl<A: FedArgs, const N: usize> FedArgs for [A; N] {
    type Value = Vec<A::Value>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        for a in self {
            a.refs(out);
        }
    }
    fn resolve(self, values: &mut std::vec::IntoIter<Bytes>) -> Result<Self::Value, RuntimeError> {
        self.into_iter().map(|a| a.resolve(values)).collect()
    }
}

macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: FedArgs),+> FedArgs for ($($name,)+) {
            type Value = ($($name::Value,)+);
            #[allow(non_snake_case)]
            fn refs(&self, out: &mut Vec<ObjRef>) {
                let ($($name,)+) = self;
                $($name.refs(out);)+
            }
            #[allow(non_snake_case)]
            fn resolve(self, values: &mut std::vec::IntoIter<Bytes>) -> Result<Self::Value, RuntimeError> {
                let ($($name,)+) = self;
                Ok(($($name.resolve(values)?,)+))
            }
        }
    };
}
tuple_args!(A);
tuple_args!(A, B);
tuple_args!(A, B, C);
tuple_args!(A, B, C, D);
tuple_args!(A, B, C, D, E);
tuple_args!(A, B, C, D, E, F);
tuple_args!(A, B, C, D, E, F, G);
tuple_args!(A, B, C, D, E, F, G, H);
