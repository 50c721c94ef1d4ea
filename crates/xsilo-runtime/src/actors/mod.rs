//! The actix shells around the rules: `Objects` (around the object table;
//! it keeps the user actors' states and hands bodies to the worker
//! [`pool`]), one `Link` per peer (around the peer's rules), and the
//! `Coordinator`, the one actor that addresses the others (around the
//! lifecycle).

pub(crate) mod coordinator;
pub(crate) mod link;
pub(crate) mod objects;
pub(crate) mod pool;
