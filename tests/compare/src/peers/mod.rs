//! The systems under test, one module each, all behind [`crate::workload::Peer`].

pub(crate) mod annals;
pub(crate) mod cqrs;
pub(crate) mod eventsourced;
