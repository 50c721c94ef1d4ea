//! `FedObject<T>`: a handle on a value produced by one party.

use std::fmt;
use std::marker::PhantomData;
use std::panic::Location;
use std::sync::Arc;

use xsilo_runtime::{ObjRef, Releaser, TaskError};
use xsilo_wire::payload::Payload;
use xsilo_wire::{Fingerprint, ObjectId, PartyName};

use crate::value::{encode, Value};

/// The one allocation all clones of a handle share: when the last clone
/// drops, the runtime is told that the driver holds the object no more.
struct Handle {
    id: ObjectId,
    owner: PartyName,
    fingerprint: Fingerprint,
    release: Releaser,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.release.object(self.id);
    }
}

/// A handle on the value of a call, owned by the party the call is pinned
/// to. Every party holds the same handle (same id, same owner) because every
/// party runs the same driver (promise M1). Cloning a handle is cheap and
/// does not copy the value.
///
/// **Lifetime** (promise L1): the party frees its copy of the value once
/// the last clone of the handle is dropped and nothing it still owes needs
/// the value (a push not yet acknowledged, a call not yet run). Every party
/// runs the same driver, so every party drops its handles at the same
/// program points. A handle kept in a container (a `Vec` of every round's
/// results, a map) keeps its value alive in every party that holds it:
/// drop or overwrite what you no longer need.
pub struct FedObject<T> {
    inner: Arc<Handle>,
    _value: PhantomData<fn() -> T>,
}

impl<T> FedObject<T> {
    pub(crate) fn new(r: &ObjRef, release: &Releaser) -> Self {
        Self {
            inner: Arc::new(Handle {
                id: r.id,
                owner: r.owner.clone(),
                fingerprint: r.fingerprint,
                release: release.clone(),
            }),
            _value: PhantomData,
        }
    }

    /// The object's id (its sequence number in the driver program).
    pub fn id(&self) -> ObjectId {
        self.inner.id
    }

    /// The party that produces the value.
    pub fn owner(&self) -> &PartyName {
        &self.inner.owner
    }

    pub(crate) fn obj_ref(&self) -> ObjRef {
        ObjRef {
            id: self.inner.id,
            owner: self.inner.owner.clone(),
            fingerprint: self.inner.fingerprint,
        }
    }
}

impl<T> Clone for FedObject<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _value: PhantomData,
        }
    }
}

impl<T> fmt::Debug for FedObject<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FedObject({} of '{}')", self.inner.id, self.inner.owner)
    }
}

/// The fingerprint of a call site, output index and call name
/// ([`Fingerprint::of_rust_call`]: the source file, line, column, the index
/// and the name, if any). Stable across processes, builds and machines
/// running the same source.
pub(crate) fn fingerprint(site: &Location<'_>, index: usize, name: Option<&str>) -> Fingerprint {
    Fingerprint::of_rust_call(site.file(), site.line(), site.column(), index, name)
}

/// Several values returned by one call as several FedObjects (promise M5):
/// tuples of two to six [`Value`]s.
pub trait Returns: Send + 'static {
    /// The handles: one FedObject per value.
    type Handles;
    /// How many values.
    const COUNT: usize;
    /// Encodes each value.
    #[doc(hidden)]
    fn encode_all(self) -> Result<Vec<Payload>, TaskError>;
    /// Builds the handles from the output refs.
    #[doc(hidden)]
    fn handles(refs: &[ObjRef], release: &Releaser) -> Self::Handles;
}

pub(crate) fn encode_one<T: Value>(value: T) -> Result<Payload, TaskError> {
    encode(value).map_err(|message| TaskError {
        kind: "EncodeError".into(),
        message: format!("cannot encode a {}: {message}", std::any::type_name::<T>()),
        causes: Vec::new(),
    })
}

macro_rules! returns {
    ($n:expr; $($name:ident $idx:tt),+) => {
        impl<$($name: Value),+> Returns for ($($name,)+) {
            type Handles = ($(FedObject<$name>,)+);
            const COUNT: usize = $n;
            fn encode_all(self) -> Result<Vec<Payload>, TaskError> {
                Ok(vec![$(encode_one(self.$idx)?),+])
            }
            fn handles(refs: &[ObjRef], release: &Releaser) -> Self::Handles {
                ($(FedObject::new(&refs[$idx], release),)+)
            }
        }
    };
}
returns!(2; A 0, B 1);
returns!(3; A 0, B 1, C 2);
returns!(4; A 0, B 1, C 2, D 3);
returns!(5; A 0, B 1, C 2, D 3, E 4);
returns!(6; A 0, B 1, C 2, D 3, E 4, F 5);
