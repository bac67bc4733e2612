//! The JSON forms of Annals, each written once: what the API answers, what `annals export`
//! writes and `annals import` reads, and what the OpenAPI document describes (its schemas are
//! derived from these types with `schemars`).
//!
//! - [`Envelope`]: an event with its metadata (API replies, the global log, the live feed,
//!   the export's event lines);
//! - [`cbor`]: the one lossless mapping between CBOR values (stored payloads and rejections)
//!   and JSON;
//! - [`time`]: the one RFC 3339 form of a timestamp;
//! - [`api`]: the other bodies of the API, problem details included.

pub mod api;
pub mod cbor;
mod envelope;
pub mod time;

pub use envelope::Envelope;
