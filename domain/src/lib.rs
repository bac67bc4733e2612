//! The Annals reference domain: aggregates defined on the runtime, used by the service, the
//! load harness, the benchmarks and the docs.
//!
//! - [`bank`]: a bank account, the benchmark aggregate (deposits and withdrawals with a
//!   rejection rule).
//!
//! Customers, orders and the credit-reservation saga are added with the domain issue.

pub mod bank;
