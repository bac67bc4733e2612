//! Annals runtime (placeholder docs, rewritten below).
pub mod aggregate;
pub mod codec;
pub mod envelope;
pub mod store;
pub mod types;
