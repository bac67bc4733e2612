//! [`Config::render`]: the effective configuration as TOML for `annals config`.
//!
//! The values come from `Config`'s `Serialize` (which redacts secrets and writes durations as
//! milliseconds under their `_ms` names), so a field added to the struct shows up here even
//! before anyone lists it in `keys.rs` — and a test fails until someone does. The key order is
//! that of `keys.rs`, which is the order of `config/annals.toml`.

use crate::config::Config;
use crate::keys::{KEYS, SECTIONS};
use crate::origin::Origin;

const HEADER: &str = "\
# The effective configuration of Annals: the built-in defaults, overridden by the configuration
# file, then by ANNALS_* environment variables, then by command-line flags. A comment names the
# source of each value that is not a built-in default. Thread counts of 0 (chosen from the number of
# cores) are shown resolved. Secrets are redacted.
";

pub(crate) fn render(config: &Config) -> String {
    let mut out = String::from(HEADER);
    let table = match toml::Table::try_from(config) {
        Ok(table) => table,
        // Only a value set in code beyond every bound (a u64 over i64::MAX) gets here.
        Err(error) => return format!("{out}# cannot render the configuration: {error}\n"),
    };
    for section in SECTIONS {
        let Some(items) = table.get(*section).and_then(toml::Value::as_table) else {
            continue;
        };
        out.push_str(&format!("\n[{section}]\n"));
        let listed = KEYS
            .iter()
            .filter(|key| key.section == *section)
            .map(|key| key.name);
        let unlisted = items.keys().map(String::as_str).filter(|name| {
            !KEYS
                .iter()
                .any(|key| key.section == *section && key.name == *name)
        });
        for name in listed.chain(unlisted) {
            let Some(value) = items.get(name) else {
                continue;
            };
            out.push_str(&format!("{name} = {value}"));
            let origin = config.origin(&format!("{section}.{name}"));
            if *origin != Origin::Default {
                out.push_str(&format!("  # from {origin}"));
            }
            out.push('\n');
        }
    }
    out
}
