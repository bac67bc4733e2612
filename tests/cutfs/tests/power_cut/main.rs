//! Tests of cutfs through a real mount: the durability rules as a program sees them through
//! the kernel, then programs that sync correctly (SQLite) and ones that do not, under power cuts.
//!
//! They need root and `/dev/fuse`, and fail (never skip) without them.

mod semantics;
mod sled_store;
mod sqlite;
mod support;
