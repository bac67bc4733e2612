//! Typed, validated configuration of the Annals service (package `annals-config`).
//!
//! This crate will hold the two-stage configuration of the HTTP service: a `RawConfig`
//! deserialized with `deny_unknown_fields` from built-in defaults, `config/annals.toml`,
//! `ANNALS_*` environment variables and command-line flags, then `Config::validate()` into
//! typed, bounded values. It is filled in with the HTTP service issue; until then the runtime
//! is configured in code through `annals::RuntimeOptions`, whose every limit has a documented
//! default.
