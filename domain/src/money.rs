//! Money in the reference domain: an integer number of minor units (`u64`, never a float) of a
//! currency named by its ISO 4217 code. Orders and customers' credit limits each have one; the
//! saga never compares amounts of two currencies (see [`crate::saga`]).

use annals::{Upcast, UpcastError};

/// The currency of an order or a customer created without one, and of every order and customer
/// created before they recorded their currency (`OrderCreated` and `CustomerCreated` version 1).
pub const DEFAULT_CURRENCY: &str = "EUR";

/// Upcasts an event written before its aggregate recorded a currency (the creation event of
/// schema version 1) to version 2, in [`DEFAULT_CURRENCY`]: every amount was in euros then.
pub(crate) fn upcast_to_default_currency(mut old: Upcast) -> Result<Vec<Upcast>, UpcastError> {
    // `into()` builds the CBOR text value without naming `ciborium`, which the runtime does
    // not re-export.
    if !old.set_field("currency", DEFAULT_CURRENCY.into()) {
        return Err(UpcastError::Invalid {
            event_type: old.event_type,
            schema_version: old.schema_version,
            reason: "the payload is not a map".to_string(),
        });
    }
    old.schema_version = 2;
    Ok(vec![old])
}

/// Whether `code` has the shape of an ISO 4217 alphabetic code: three upper-case ASCII letters.
/// Which codes are assigned is not checked: the list changes, and a command must not be refused
/// because this build is older than a new currency.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_codes_are_three_upper_case_letters() {
        for good in ["EUR", "USD", "XAU", DEFAULT_CURRENCY] {
            assert!(is_currency_code(good), "{good}");
        }
        for bad in ["", "eur", "EU", "EURO", "E1R", "ÉUR", "EU "] {
            assert!(!is_currency_code(bad), "{bad:?}");
        }
    }
}
