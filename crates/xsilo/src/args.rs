//! Arguments of federated calls: FedObjects, alone or inside tuples, `Vec`s,
//! `Option`s and arrays (promise M3).
//!
//! A call keeps the *shape* of its arguments ([`FedArgs::Shape`]: which
//! objects, in which structure), not the handles themselves: the handles
//! drop when the call is made, and the call's own claim on its inputs keeps
//! them until it runs (RFC 0002 "Object lifetime"). A call that consumes the
//! last handle on a value is then its last holder when it runs, and a
//! numeric array passes to it without a copy.

use std::marker::PhantomData;

use xsilo_runtime::{ObjRef, RuntimeError};
use xsilo_wire::payload::Payload;
use xsilo_wire::{ObjectId, PartyName};

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
    /// The same shape without the handles, kept by the call to rebuild
    /// [`FedArgs::Value`] from the values.
    type Shape: ArgShape<Value = Self::Value>;

    /// Appends the referenced objects, in order.
    fn refs(&self, out: &mut Vec<ObjRef>);

    /// The shape, holding no handle.
    fn shape(&self) -> Self::Shape;
}

/// The shape of a call's arguments (see [`FedArgs::Shape`]).
pub trait ArgShape: Send + 'static {
    /// What it rebuilds.
    type Value: Send + 'static;

    /// Rebuilds the values, in the order of [`FedArgs::refs`].
    fn resolve(self, values: &mut std::vec::IntoIter<Payload>)
        -> Result<Self::Value, RuntimeError>;
}

/// Where one object's value goes: its id and owner (for errors) and type.
pub struct Slot<T> {
    id: ObjectId,
    owner: PartyName,
    _value: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Slot({} of '{}')", self.id, self.owner)
    }
}

impl<T: Value> ArgShape for Slot<T> {
    type Value = T;
    fn resolve(self, values: &mut std::vec::IntoIter<Payload>) -> Result<T, RuntimeError> {
        let error = |reason: String| RuntimeError::Decode {
            object: self.id,
            from: self.owner.clone(),
            expected: std::any::type_name::<T>(),
            reason,
        };
        let payload = values
            .next()
            .ok_or_else(|| error("the value is missing".into()))?;
        decode(payload).map_err(error)
    }
}

fn slot<T>(obj: &FedObject<T>) -> Slot<T> {
    Slot {
        id: obj.id(),
        owner: obj.owner().clone(),
        _value: PhantomData,
    }
}

impl<T: Value> FedArgs for FedObject<T> {
    type Value = T;
    type Shape = Slot<T>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        out.push(self.obj_ref());
    }
    fn shape(&self) -> Slot<T> {
        slot(self)
    }
}

impl<T: Value> FedArgs for &FedObject<T> {
    type Value = T;
    type Shape = Slot<T>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        out.push(self.obj_ref());
    }
    fn shape(&self) -> Slot<T> {
        slot(self)
    }
}

impl FedArgs for () {
    type Value = ();
    type Shape = ();
    fn refs(&self, _: &mut Vec<ObjRef>) {}
    fn shape(&self) {}
}

impl ArgShape for () {
    type Value = ();
    fn resolve(self, _: &mut std::vec::IntoIter<Payload>) -> Result<(), RuntimeError> {
        Ok(())
    }
}

impl<A: FedArgs> FedArgs for Vec<A> {
    type Value = Vec<A::Value>;
    type Shape = Vec<A::Shape>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        for a in self {
            a.refs(out);
        }
    }
    fn shape(&self) -> Self::Shape {
        self.iter().map(FedArgs::shape).collect()
    }
}

impl<S: ArgShape> ArgShape for Vec<S> {
    type Value = Vec<S::Value>;
    fn resolve(
        self,
        values: &mut std::vec::IntoIter<Payload>,
    ) -> Result<Self::Value, RuntimeError> {
        self.into_iter().map(|a| a.resolve(values)).collect()
    }
}

impl<A: FedArgs> FedArgs for Option<A> {
    type Value = Option<A::Value>;
    type Shape = Option<A::Shape>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        if let Some(a) = self {
            a.refs(out);
        }
    }
    fn shape(&self) -> Self::Shape {
        self.as_ref().map(FedArgs::shape)
    }
}

impl<S: ArgShape> ArgShape for Option<S> {
    type Value = Option<S::Value>;
    fn resolve(
        self,
        values: &mut std::vec::IntoIter<Payload>,
    ) -> Result<Self::Value, RuntimeError> {
        self.map(|a| a.resolve(values)).transpose()
    }
}

impl<A: FedArgs, const N: usize> FedArgs for [A; N] {
    type Value = Vec<A::Value>;
    type Shape = Vec<A::Shape>;
    fn refs(&self, out: &mut Vec<ObjRef>) {
        for a in self {
            a.refs(out);
        }
    }
    fn shape(&self) -> Self::Shape {
        self.iter().map(FedArgs::shape).collect()
    }
}

macro_rules! tuple_args {
    ($($name:ident),+) => {
        impl<$($name: FedArgs),+> FedArgs for ($($name,)+) {
            type Value = ($($name::Value,)+);
            type Shape = ($($name::Shape,)+);
            #[allow(non_snake_case)]
            fn refs(&self, out: &mut Vec<ObjRef>) {
                let ($($name,)+) = self;
                $($name.refs(out);)+
            }
            #[allow(non_snake_case)]
            fn shape(&self) -> Self::Shape {
                let ($($name,)+) = self;
                ($($name.shape(),)+)
            }
        }
        impl<$($name: ArgShape),+> ArgShape for ($($name,)+) {
            type Value = ($($name::Value,)+);
            #[allow(non_snake_case)]
            fn resolve(self, values: &mut std::vec::IntoIter<Payload>) -> Result<Self::Value, RuntimeError> {
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
