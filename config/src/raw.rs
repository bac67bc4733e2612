//! The first stage of loading: the file, the environment and the flags read into raw
//! settings, each with its [`Origin`], in precedence order. Unknown sections and keys are
//! refused here; values are validated by the second stage (`Config::validate`).

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{line_and_column, ConfigError, ErrorKind};
use crate::keys::{self, Key, Raw, SECTIONS};
use crate::origin::Origin;
use crate::source::{Flag, Sources};

/// One value for one key from one source.
#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) key: &'static Key,
    pub(crate) value: Raw,
    pub(crate) origin: Origin,
}

/// Every setting of every source, lowest precedence first: applied in order, the last setting
/// of a key wins.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub(crate) settings: Vec<Setting>,
}

impl RawConfig {
    /// Reads the sources.
    pub(crate) fn read(sources: &Sources) -> Result<RawConfig, ConfigError> {
        let mut raw = RawConfig::default();
        if let Some(path) = &sources.file {
            let text =
                std::fs::read_to_string(path).map_err(|e| ConfigError::unreadable(path, &e))?;
            raw.read_file(path, &text)?;
        }
        raw.read_env(&sources.env)?;
        raw.read_flags(&sources.flags)?;
        Ok(raw)
    }

    /// Reads a TOML file's text; `path` is for messages.
    pub(crate) fn read_file(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| ConfigError::syntax(path, text, &e))?;
        let lines = Lines::of(text);
        let origin = |line: Option<usize>| Origin::File {
            path: path.to_owned(),
            line,
        };

        // Everything the file sets, or the mistake in its place, so that the first mistake in
        // the file is the one reported (the table itself is in alphabetical order).
        let mut entries: Vec<(Option<usize>, Result<Setting, ConfigError>)> = Vec::new();
        for (section, value) in &table {
            let line = lines.top(section);
            let Some(known) = SECTIONS.iter().find(|s| **s == section.as_str()) else {
                let error = if value.is_table() {
                    let suggestion = keys::suggest_section(section).map(str::to_owned);
                    ConfigError::unknown_section(section, origin(line), suggestion)
                } else {
                    // `addr = "…"` above any section header.
                    let suggestion =
                        keys::suggest_key(None, section).map(|key| key.full.to_owned());
                    ConfigError::unknown_key(section, origin(line), suggestion)
                };
                entries.push((line, Err(error)));
                continue;
            };
            let Some(items) = value.as_table() else {
                let message = format!(
                    "{known}: expected a section [{known}], found {} (from {})",
                    keys::type_name(value),
                    origin(line)
                );
                let error = ConfigError::new(
                    ErrorKind::WrongType,
                    Some((*known).to_owned()),
                    Some(origin(line)),
                    message,
                );
                entries.push((line, Err(error)));
                continue;
            };
            for (name, value) in items {
                let line = lines.key(known, name);
                let setting = match keys::find(known, name) {
                    Some(key) => Ok(Setting {
                        key,
                        value: Raw::Toml(value.clone()),
                        origin: origin(line),
                    }),
                    None => {
                        let suggestion =
                            keys::suggest_key(Some(known), name).map(|key| key.full.to_owned());
                        let written = format!("{known}.{name}");
                        Err(ConfigError::unknown_key(&written, origin(line), suggestion))
                    }
                };
                entries.push((line, setting));
            }
        }
        entries.sort_by_key(|(line, _)| *line);
        for (_, setting) in entries {
            self.settings.push(setting?);
        }
        Ok(())
    }

    /// Reads the `ANNALS_{SECTION}_{KEY}` variables; ignores every other variable.
    pub(crate) fn read_env(&mut self, env: &[(String, String)]) -> Result<(), ConfigError> {
        // Sorted, so that with several mistakes the same one is reported every time.
        let mut vars: Vec<&(String, String)> = env
            .iter()
            .filter(|(name, _)| name.starts_with("ANNALS_"))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));

        for (var, value) in vars {
            let Some((section, rest)) = SECTIONS.iter().find_map(|section| {
                let prefix = format!("ANNALS_{}_", section.to_ascii_uppercase());
                var.strip_prefix(&prefix).map(|rest| (*section, rest))
            }) else {
                continue;
            };
            let origin = Origin::Env { var: var.clone() };
            let Some(key) = env_key(section, rest) else {
                let name = rest.to_ascii_lowercase();
                let suggestion = keys::suggest_key(Some(section), &name).map(Key::env_var);
                return Err(ConfigError::unknown_key(
                    &format!("{section}.{name}"),
                    origin,
                    suggestion,
                ));
            };
            self.settings.push(Setting {
                key,
                value: Raw::Text(value.clone()),
                origin,
            });
        }
        Ok(())
    }

    /// Reads the flags, in order.
    pub(crate) fn read_flags(&mut self, flags: &[Flag]) -> Result<(), ConfigError> {
        for flag in flags {
            let origin = Origin::Flag {
                name: flag.name.clone(),
            };
            let key = flag
                .key
                .split_once('.')
                .and_then(|(section, name)| keys::find(section, name));
            let Some(key) = key else {
                let suggestion = match flag.key.split_once('.') {
                    Some((section, name)) => keys::suggest_key(Some(section), name),
                    None => keys::suggest_key(None, &flag.key),
                };
                return Err(ConfigError::unknown_key(
                    &flag.key,
                    origin,
                    suggestion.map(|key| key.full.to_owned()),
                ));
            };
            self.settings.push(Setting {
                key,
                value: Raw::Text(flag.value.clone()),
                origin,
            });
        }
        Ok(())
    }
}

/// The key of `section` whose variable name ends in `rest` (`ADDR`): exactly the upper-case
/// name, so `ANNALS_SERVER_addr` is a mistake, reported, not a match.
fn env_key(section: &str, rest: &str) -> Option<&'static Key> {
    keys::KEYS
        .iter()
        .find(|key| key.section == section && key.name.to_ascii_uppercase() == rest)
}

/// The lines of the file's sections and keys, for messages. toml_edit keeps the span of every
/// key; `toml`'s own `Spanned` cannot wrap a table written with dotted keys.
#[derive(Default)]
struct Lines {
    /// Top-level names (sections, stray keys).
    top: BTreeMap<String, usize>,
    /// Section → key → line.
    keys: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Lines {
    fn of(text: &str) -> Lines {
        let Ok(document) = toml_edit::ImDocument::parse(text) else {
            return Lines::default();
        };
        let line_of = |key: &toml_edit::Key, item: &toml_edit::Item| {
            let span = key.span().or_else(|| item.span())?;
            Some(line_and_column(text, span.start).0)
        };
        let lines_of = |table: &dyn toml_edit::TableLike| -> BTreeMap<String, usize> {
            table
                .iter()
                .filter_map(|(name, _)| {
                    let (key, item) = table.get_key_value(name)?;
                    Some((name.to_owned(), line_of(key, item)?))
                })
                .collect()
        };
        let root = document.as_table();
        let keys = root
            .iter()
            .filter_map(|(name, item)| Some((name.to_owned(), lines_of(item.as_table_like()?))))
            .collect();
        Lines {
            top: lines_of(root),
            keys,
        }
    }

    fn top(&self, name: &str) -> Option<usize> {
        self.top.get(name).copied()
    }

    fn key(&self, section: &str, name: &str) -> Option<usize> {
        self.keys.get(section)?.get(name).copied()
    }
}
