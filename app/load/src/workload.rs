//! What the harness sends: the two workloads (`bank`, `orders`), the ids of their aggregates,
//! and how each client picks the aggregate of its next command (a fixed partition, or a Zipf
//! distribution over the aggregates for hot keys).
//!
//! The commands are the domain's own types ([`AccountCommand`], [`CustomerCommand`],
//! [`OrderCommand`]): the in-process target executes them as they are, the HTTP target sends
//! their serde JSON, so both targets carry exactly the same commands.

use annals::Aggregate;
use annals_domain::bank::{Account, AccountCommand};
use annals_domain::customer::{Customer, CustomerCommand};
use annals_domain::order::{Order, OrderCommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::Zipf;

/// The workloads of `annals load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WorkloadKind {
    /// Deposits and withdrawals on bank accounts, some refused for insufficient funds: the
    /// runtime core benchmark.
    Bank,
    /// The reference domain: customers are created first, then each session creates an order,
    /// waits for the saga's decision and ships or cancels some of the approved orders.
    Orders,
}

impl WorkloadKind {
    /// The name used on the command line and in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            WorkloadKind::Bank => "bank",
            WorkloadKind::Orders => "orders",
        }
    }
}

/// The aggregate types the harness addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// [`Account`].
    Account,
    /// [`Customer`].
    Customer,
    /// [`Order`].
    Order,
}

impl Kind {
    /// The aggregate type name the runtime stores ([`Aggregate::TYPE`]).
    pub(crate) fn type_name(self) -> &'static str {
        match self {
            Kind::Account => Account::TYPE,
            Kind::Customer => Customer::TYPE,
            Kind::Order => Order::TYPE,
        }
    }

    /// The path segment of the aggregate in the HTTP API (`/v1/{route}/{id}`).
    pub(crate) fn route(self) -> &'static str {
        match self {
            Kind::Account => "accounts",
            Kind::Customer => "customers",
            Kind::Order => "orders",
        }
    }

    /// The kind named by an aggregate type name or an HTTP route (envelopes may carry either).
    pub(crate) fn parse(name: &str) -> Option<Kind> {
        [Kind::Account, Kind::Customer, Kind::Order]
            .into_iter()
            .find(|kind| name == kind.type_name() || name == kind.route())
    }
}

/// One command for one aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// A command of an account.
    Account(AccountCommand),
    /// A command of a customer.
    Customer(CustomerCommand),
    /// A command of an order.
    Order(OrderCommand),
}

impl Command {
    /// The aggregate type the command is for.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Command::Account(_) => Kind::Account,
            Command::Customer(_) => Kind::Customer,
            Command::Order(_) => Kind::Order,
        }
    }

    /// The command's type name (its JSON `type`), for reports and messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Account(AccountCommand::Deposit { .. }) => "Deposit",
            Command::Account(AccountCommand::Withdraw { .. }) => "Withdraw",
            Command::Customer(c) => c.command_type(),
            Command::Order(c) => c.command_type(),
        }
    }

    /// The command's JSON, as the HTTP API takes it (the domain's serde shape).
    pub(crate) fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Command::Account(c) => serde_json::to_value(c),
            Command::Customer(c) => serde_json::to_value(c),
            Command::Order(c) => serde_json::to_value(c),
        }
    }
}

/// A command addressed to an aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The aggregate id.
    pub(crate) id: String,
    /// The command.
    pub(crate) command: Command,
}

/// Every customer of the `orders` workload gets this credit limit (minor units). Order totals
/// average about 51,000, so a customer can hold about 40 reservations at once: customers hit by
/// many orders run out of credit and the saga rejects some orders, as in the saga benchmark.
pub(crate) const CREDIT_LIMIT: u64 = 2_000_000;

/// The id of account `index`.
pub(crate) fn account_id(prefix: &str, index: u64) -> String {
    format!("{prefix}acct-{index}")
}

/// The id of customer `index`.
pub(crate) fn customer_id(prefix: &str, index: u64) -> String {
    format!("{prefix}c-{index}")
}

/// The id of order number `n`.
pub(crate) fn order_id(prefix: &str, n: u64) -> String {
    format!("{}{n}", order_prefix(prefix))
}

/// The start of every order id of a run.
pub(crate) fn order_prefix(prefix: &str) -> String {
    format!("{prefix}o-")
}

/// The `seq`-th command of a bank client, as in the runtime benchmark: two deposits of 100,
/// then a withdrawal of 250 (refused while the balance is short: the business rejections).
pub(crate) fn bank_command(seq: u64) -> Command {
    Command::Account(if seq % 3 == 2 {
        AccountCommand::Withdraw { amount: 250 }
    } else {
        AccountCommand::Deposit { amount: 100 }
    })
}

/// The command that creates customer `index`.
pub(crate) fn create_customer(index: u64) -> Command {
    Command::Customer(CustomerCommand::CreateCustomer {
        name: format!("load customer {index}"),
        credit_limit: CREDIT_LIMIT,
        currency: None,
    })
}

/// The command that creates order number `n` for `customer_id`. Totals from 1,000 to 100,999
/// minor units, spread deterministically (as in the saga benchmark).
pub(crate) fn create_order(n: u64, customer_id: String) -> Command {
    Command::Order(OrderCommand::CreateOrder {
        customer_id,
        total: 1_000 + n.wrapping_mul(7_919) % 100_000,
        currency: None,
    })
}

/// What a session does with order number `n` once the saga approved it: ship half of the
/// approved orders, cancel a quarter (which makes the saga release the credit), leave the rest
/// approved.
pub(crate) fn follow_up(n: u64) -> Option<Command> {
    match n % 4 {
        0 | 1 => Some(Command::Order(OrderCommand::ShipOrder)),
        2 => Some(Command::Order(OrderCommand::CancelOrder)),
        _ => None,
    }
}

/// How a client picks the aggregate (an index in `0..aggregates`) of its next command.
#[derive(Debug)]
pub(crate) enum Picker {
    /// Skew 0: the client owns the indices `first, first + step, …` below the number of
    /// aggregates and goes round them, so that with as many clients as aggregates each client
    /// has its own aggregate (the runtime benchmark) and no two clients contend.
    Partition {
        /// The client's first index.
        first: u64,
        /// The distance between its indices (the number of clients).
        step: u64,
        /// The number of aggregates.
        aggregates: u64,
        /// The next index.
        cursor: u64,
    },
    /// Skew > 0: each command draws its aggregate from a Zipf distribution, rank 1 (the
    /// hottest) being index 0. Clients contend for the hot aggregates.
    Zipf {
        /// The distribution over ranks `1..=aggregates`.
        distribution: Zipf<f64>,
        /// The client's own generator, seeded from `--seed` and the client's number so that
        /// runs repeat.
        rng: Box<StdRng>,
        /// The number of aggregates.
        aggregates: u64,
    },
}

impl Picker {
    /// The picker of client `client` out of `clients`, over `aggregates` aggregates
    /// (validated: at least 1) with Zipf exponent `skew` (validated: finite, at least 0).
    pub(crate) fn new(client: u64, clients: u64, aggregates: u64, skew: f64, seed: u64) -> Picker {
        let aggregates = aggregates.max(1);
        if skew > 0.0 {
            if let Ok(distribution) = Zipf::new(aggregates, skew) {
                return Picker::Zipf {
                    distribution,
                    rng: Box::new(StdRng::seed_from_u64(
                        seed ^ client.wrapping_mul(0x9e37_79b9),
                    )),
                    aggregates,
                };
            }
        }
        let first = client % aggregates;
        Picker::Partition {
            first,
            step: clients.max(1),
            aggregates,
            cursor: first,
        }
    }

    /// The index of the next aggregate.
    pub(crate) fn next_index(&mut self) -> u64 {
        match self {
            Picker::Partition {
                first,
                step,
                aggregates,
                cursor,
            } => {
                let index = *cursor;
                *cursor = match cursor.checked_add(*step) {
                    Some(next) if next < *aggregates => next,
                    _ => *first,
                };
                index
            }
            Picker::Zipf {
                distribution,
                rng,
                aggregates,
            } => rank_to_index(rng.sample(*distribution), *aggregates),
        }
    }
}

/// The index of a Zipf rank (a float in `1..=aggregates`).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the rank is a whole number from 1 to `aggregates`, which fits in u64; a stray \
              value is clamped below"
)]
fn rank_to_index(rank: f64, aggregates: u64) -> u64 {
    let rank = rank.max(1.0) as u64;
    rank.saturating_sub(1).min(aggregates - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_gives_each_client_its_own_aggregates() {
        let mut seen = Vec::new();
        for client in 0..3 {
            let mut picker = Picker::new(client, 3, 7, 0.0, 1);
            let mut mine: Vec<u64> = (0..5).map(|_| picker.next_index()).collect();
            mine.sort_unstable();
            mine.dedup();
            seen.extend(mine);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
    }

    #[test]
    fn more_clients_than_aggregates_share_them() {
        let mut picker = Picker::new(5, 8, 3, 0.0, 1);
        assert_eq!(
            (0..3).map(|_| picker.next_index()).collect::<Vec<_>>(),
            [2, 2, 2]
        );
    }

    #[test]
    fn zipf_prefers_the_first_aggregates() {
        let mut picker = Picker::new(0, 1, 1000, 1.2, 7);
        let draws: Vec<u64> = (0..10_000).map(|_| picker.next_index()).collect();
        assert!(draws.iter().all(|&i| i < 1000));
        let hottest = draws.iter().filter(|&&i| i == 0).count();
        let cold = draws.iter().filter(|&&i| i == 999).count();
        assert!(hottest > 1000 && hottest > cold * 10, "{hottest} {cold}");
    }

    #[test]
    fn kinds_parse_from_type_names_and_routes() {
        assert_eq!(Kind::parse("Order"), Some(Kind::Order));
        assert_eq!(Kind::parse("accounts"), Some(Kind::Account));
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn commands_serialize_as_the_http_api_takes_them() -> Result<(), serde_json::Error> {
        assert_eq!(
            bank_command(0).to_json()?,
            serde_json::json!({"type": "Deposit", "amount": 100})
        );
        assert_eq!(
            follow_up(0).map(|c| c.to_json()).transpose()?,
            Some(serde_json::json!({"type": "ShipOrder"}))
        );
        Ok(())
    }
}
