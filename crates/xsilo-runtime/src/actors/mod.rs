//! The actix shells around the rules: `Objects` (the object table and the
//! user actors' states), one `Link` per peer, and the `Supervisor`, the one
//! actor that addresses the others.

pub(crate) mod link;
pub(crate) mod objects;
pub(crate) mod supervisor;
