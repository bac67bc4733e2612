//! A bank account: the benchmark aggregate of the runtime (deposits, withdrawals, and a
//! rejection when the balance does not cover a withdrawal).
//!
//! Money is an integer number of minor units (`u64`), never a float.

use annals::{Aggregate, AggregateOptions, DomainEvent};
use serde::{Deserialize, Serialize};

/// A bank account's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Account {
    /// The balance, in minor units.
    pub balance: u64,
    /// Number of deposits and withdrawals applied.
    pub movements: u64,
}

/// Commands of an account. JSON: `{"type":"Deposit","amount":100}`. A field the command does
/// not have is an error (`deny_unknown_fields`), not silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum AccountCommand {
    /// Adds money.
    Deposit {
        /// Minor units, more than zero.
        amount: u64,
    },
    /// Takes money out, if the balance covers it.
    Withdraw {
        /// Minor units, more than zero.
        amount: u64,
    },
}

/// Events of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type")]
pub enum AccountEvent {
    /// Money was added.
    Deposited {
        /// Minor units.
        amount: u64,
    },
    /// Money was taken out.
    Withdrawn {
        /// Minor units.
        amount: u64,
    },
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Deposited { .. } => "Deposited",
            AccountEvent::Withdrawn { .. } => "Withdrawn",
        }
    }
}

/// Why an account refused a command.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, schemars::JsonSchema,
)]
#[serde(tag = "type")]
pub enum AccountRejection {
    /// The balance does not cover the withdrawal.
    #[error("insufficient funds: balance {balance}, requested {requested}")]
    InsufficientFunds {
        /// The balance.
        balance: u64,
        /// The amount asked for.
        requested: u64,
    },
    /// Amounts must be positive.
    #[error("the amount must be more than zero")]
    ZeroAmount,
    /// The deposit would overflow the balance.
    #[error("the deposit would overflow the balance")]
    Overflow,
}

impl Aggregate for Account {
    const TYPE: &'static str = "Account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Rejection = AccountRejection;

    fn decide(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountRejection> {
        match *command {
            AccountCommand::Deposit { amount: 0 } | AccountCommand::Withdraw { amount: 0 } => {
                Err(AccountRejection::ZeroAmount)
            }
            AccountCommand::Deposit { amount } => {
                self.balance
                    .checked_add(amount)
                    .ok_or(AccountRejection::Overflow)?;
                Ok(vec![AccountEvent::Deposited { amount }])
            }
            AccountCommand::Withdraw { amount } if amount > self.balance => {
                Err(AccountRejection::InsufficientFunds {
                    balance: self.balance,
                    requested: amount,
                })
            }
            AccountCommand::Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match *event {
            // `decide` refuses overflowing deposits, so saturation never changes a result.
            AccountEvent::Deposited { amount } => {
                self.balance = self.balance.saturating_add(amount);
            }
            AccountEvent::Withdrawn { amount } => {
                self.balance = self.balance.saturating_sub(amount);
            }
        }
        self.movements += 1;
    }

    fn options() -> AggregateOptions {
        AggregateOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use annals::testkit::AggregateTest;

    fn deposited(amount: u64) -> AccountEvent {
        AccountEvent::Deposited { amount }
    }

    fn withdrawn(amount: u64) -> AccountEvent {
        AccountEvent::Withdrawn { amount }
    }

    #[test]
    fn deposit_opens_a_new_account() {
        AggregateTest::<Account>::given_no_previous_events()
            .when(AccountCommand::Deposit { amount: 100 })
            .then_expect_events(vec![deposited(100)])
            .then_expect_state_eq(Account {
                balance: 100,
                movements: 1,
            })
            .then_expect_deterministic();
    }

    #[test]
    fn deposits_add_up() {
        AggregateTest::<Account>::given(vec![deposited(100), deposited(50)])
            .when(AccountCommand::Deposit { amount: 25 })
            .then_expect_events(vec![deposited(25)])
            .then_expect_state_eq(Account {
                balance: 175,
                movements: 3,
            });
    }

    #[test]
    fn withdrawal_within_the_balance_is_accepted() {
        AggregateTest::<Account>::given(vec![deposited(100)])
            .when(AccountCommand::Withdraw { amount: 30 })
            .then_expect_events(vec![withdrawn(30)])
            .then_expect_state_eq(Account {
                balance: 70,
                movements: 2,
            })
            .then_expect_deterministic();
    }

    #[test]
    fn withdrawal_of_the_whole_balance_is_accepted() {
        AggregateTest::<Account>::given(vec![deposited(100), withdrawn(40)])
            .when(AccountCommand::Withdraw { amount: 60 })
            .then_expect_events(vec![withdrawn(60)])
            .then_expect_state(|account| assert_eq!(account.balance, 0));
    }

    #[test]
    fn withdrawal_beyond_the_balance_is_rejected_as_insufficient_funds() {
        AggregateTest::<Account>::given(vec![deposited(100), withdrawn(40)])
            .when(AccountCommand::Withdraw { amount: 61 })
            .then_expect_rejection(AccountRejection::InsufficientFunds {
                balance: 60,
                requested: 61,
            })
            .then_expect_deterministic();
    }

    #[test]
    fn withdrawal_from_a_new_account_is_rejected_as_insufficient_funds() {
        AggregateTest::<Account>::given_no_previous_events()
            .when(AccountCommand::Withdraw { amount: 1 })
            .then_expect_rejection(AccountRejection::InsufficientFunds {
                balance: 0,
                requested: 1,
            });
    }

    #[test]
    fn zero_amounts_are_rejected() {
        AggregateTest::<Account>::given(vec![deposited(100)])
            .when(AccountCommand::Deposit { amount: 0 })
            .then_expect_rejection(AccountRejection::ZeroAmount);
        // Checked before the balance: a zero withdrawal from an empty account is not
        // "insufficient funds".
        AggregateTest::<Account>::given_no_previous_events()
            .when(AccountCommand::Withdraw { amount: 0 })
            .then_expect_rejection(AccountRejection::ZeroAmount);
    }

    #[test]
    fn deposit_up_to_the_largest_balance_is_accepted() {
        AggregateTest::<Account>::given(vec![deposited(u64::MAX - 1)])
            .when(AccountCommand::Deposit { amount: 1 })
            .then_expect_events(vec![deposited(1)])
            .then_expect_state(|account| assert_eq!(account.balance, u64::MAX));
    }

    #[test]
    fn deposit_that_would_overflow_the_balance_is_rejected() {
        AggregateTest::<Account>::given(vec![deposited(u64::MAX)])
            .when(AccountCommand::Deposit { amount: 1 })
            .then_expect_rejection(AccountRejection::Overflow)
            .then_expect_deterministic();
    }

    #[test]
    fn commands_refuse_unknown_fields_and_accept_their_own() {
        use crate::test_support::{assert_json_decodes, assert_unknown_field_refused};
        assert_json_decodes(
            r#"{"type":"Deposit","amount":100}"#,
            &AccountCommand::Deposit { amount: 100 },
        );
        assert_json_decodes(
            r#"{"type":"Withdraw","amount":100}"#,
            &AccountCommand::Withdraw { amount: 100 },
        );
        assert_unknown_field_refused::<AccountCommand>(
            r#"{"type":"Deposit","amount":100,"currency":"EUR"}"#,
            "currency",
        );
        assert_unknown_field_refused::<AccountCommand>(
            r#"{"type":"Withdraw","amout":100}"#,
            "amout",
        );
        for command in [
            AccountCommand::Deposit { amount: 1 },
            AccountCommand::Withdraw { amount: u64::MAX },
        ] {
            crate::test_support::assert_cbor_round_trip(&command);
        }
    }

    #[test]
    fn rejections_are_typed_values() {
        let result = AggregateTest::<Account>::given(vec![deposited(10)])
            .when(AccountCommand::Withdraw { amount: 11 })
            .into_result();
        assert!(
            matches!(
                result,
                Err(AccountRejection::InsufficientFunds {
                    balance: 10,
                    requested: 11
                })
            ),
            "{result:?}"
        );
    }
}
