//! # xsilo-py: the Python bindings of xsilo
//!
//! The extension module `xsilo._xsilo` under the pure-Python package
//! `xsilo` (in `python/xsilo`), which gives RayFed's API (`fed.init`,
//! `@fed.remote`, `fed.get`, `fed.kill`, `fed.shutdown`). This crate is the
//! bridge: a `Node` (in `node.rs`) is one party's runtime, started with `xsilo::init`;
//! each call the driver makes becomes a `xsilo_runtime::Call` whose body
//! runs on the runtime's worker pool and takes the GIL only while Python
//! code runs; `get` waits with the GIL released. Values cross as the
//! codec in `codec.rs` writes them, never as pickle.
//!
//! Built by maturin with the `python` feature (see `pyproject.toml`);
//! without it (the workspace's `cargo test`) the crate is empty.

#[cfg(feature = "python")]
mod codec;
#[cfg(feature = "python")]
mod config;
#[cfg(feature = "python")]
mod node;
#[cfg(feature = "python")]
mod threads;
