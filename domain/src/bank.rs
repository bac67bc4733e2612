//! A bank account: the benchmark aggregate of the runtime (deposits, withdrawals, and a
//! rejection when the balance does not cover a withdrawal).
//!
//! Money is an integer number of minor units (`u64`), never a float.

use annals::{Aggregate, AggregateOptions, DomainEvent};
use serde::{Deserialize, Serialize};

/// A bank account's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// The balance, in minor units.
    pub balance: u64,
    /// Number of deposits and withdrawals applied.
    pub movements: u64,
}

/// Commands of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
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
                self.balance.checked_add(amount).ok_or(AccountRejection::Overflow)?;
                Ok(vec![AccountEvent::Deposited { amount }])
            }
            AccountCommand::Withdraw { amount } if amount > self.balance => {
                Err(AccountRejection::InsufficientFunds { balance: self.balance, requested: amount })
            }
            AccountCommand::Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match *event {
            // `decide` refuses overflowing deposits, so saturation never changes a result.
            AccountEvent::Deposited { amount } => self.balance = self.balance.saturating_add(amount),
            AccountEvent::Withdrawn { amount } => self.balance = self.balance.saturating_sub(amount),
        }
        self.movements += 1;
    }

    fn options() -> AggregateOptions {
        AggregateOptions::default()
    }
}
