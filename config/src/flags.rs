//! What the command lines of the `annals` binary share about configuration: the `--set
//! SECTION.KEY=VALUE` arguments turned into [`Flag`]s ([`set_flags`]), and [`UsageError`], the
//! error of a caller's mistake, which every subcommand exits with code 2 for.
//!
//! They live here, below both the service (`annals-app`) and the load harness
//! (`annals-load`), so that neither crate depends on the other for them.

use crate::source::Flag;

/// A mistake of the caller (bad arguments, bad configuration): the binary exits with code 2
/// instead of 1, which it keeps for failures found at run time (damage, lost writes).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The flags of `--set SECTION.KEY=VALUE` arguments, in order (later ones win). Only the
/// shape is checked here; the keys and values are checked by
/// [`Config::load`](crate::Config::load), whose messages never echo a value set this way (it
/// may be a token or a database password).
///
/// # Errors
/// A [`UsageError`] for an argument without `=` or without a key before it.
pub fn set_flags(set: &[String]) -> Result<Vec<Flag>, UsageError> {
    set.iter()
        .map(|argument| Flag::parse_set(argument).map_err(|e| UsageError(e.to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_arguments_become_flags_in_order() -> Result<(), UsageError> {
        let set = ["store.durability=relaxed", "log.level=info,annals=debug"].map(String::from);
        assert_eq!(
            set_flags(&set)?,
            [
                Flag::new("store.durability", "relaxed", "--set"),
                Flag::new("log.level", "info,annals=debug", "--set"),
            ]
        );
        Ok(())
    }

    #[test]
    fn an_argument_without_a_key_is_a_usage_error() {
        for argument in ["store.durability", "=relaxed"] {
            let error = set_flags(&[argument.to_owned()]).expect_err("no key=value");
            assert!(
                error.0.starts_with("flag --set takes section.key=value"),
                "{error}"
            );
        }
    }
}
