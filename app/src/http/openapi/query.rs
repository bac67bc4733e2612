//! Query parameters generated from the handlers' own query structs (`StateQuery`,
//! `HistoryQuery`, ...; each derives `JsonSchema` beside its `Deserialize`): one parameter per
//! member of the struct's schema, its description from the member's doc comment and its schema
//! from the member's type, so a member added to a struct is documented without a change here.
//!
//! What the type cannot say is added after generation, as a short table of [`Adjust`]ments per
//! route: bounds and wording that come from the configuration (page sizes, waits), bounds the
//! handler checks (`version` from 1), the RFC 3339 patterns, and members a route refuses.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::de::{self, DeserializeOwned, Visitor};
use serde_json::{Map, Value};

use super::operation::{In, Parameter};
use super::schemas::bound_unsigned;

/// A change to one generated query parameter.
#[derive(Debug, Clone, Default)]
pub(super) struct Adjust {
    /// Members merged into the parameter's schema (bounds, patterns, formats).
    schema: Map<String, Value>,
    /// The description, replacing the doc comment's (wording with configured values).
    description: Option<String>,
    /// Leave the parameter out: the struct has it, but this route refuses it.
    omit: bool,
}

impl Adjust {
    /// Merges the members of `schema` (an object) into the parameter's schema.
    pub(super) fn schema(schema: Value) -> Adjust {
        Adjust {
            schema: match schema {
                Value::Object(members) => members,
                _ => Map::new(),
            },
            ..Adjust::default()
        }
    }

    /// Replaces the description with `description`.
    pub(super) fn describe(description: impl Into<String>) -> Adjust {
        Adjust {
            description: Some(description.into()),
            ..Adjust::default()
        }
    }

    /// And replaces the description with `description`.
    pub(super) fn and_describe(mut self, description: impl Into<String>) -> Adjust {
        self.description = Some(description.into());
        self
    }

    /// Leaves the parameter out.
    pub(super) fn omit() -> Adjust {
        Adjust {
            omit: true,
            ..Adjust::default()
        }
    }
}

/// A deserializer that only records the field names serde's derive hands to
/// `deserialize_struct`: a struct's members in declaration order, which its schema (a map)
/// does not keep.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only the field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// The names of `T`'s members in declaration order (none if `T` is not a struct).
fn declared<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    // Always an error: the names are all it is run for.
    let _ = T::deserialize(FieldNames(&mut fields));
    fields
}

/// A doc comment as one line per paragraph: rustdoc wraps lines, the document should not.
fn unwrap_lines(doc: &str) -> String {
    doc.split("\n\n")
        .map(|paragraph| paragraph.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// `schema` without `null` among its types: an absent query parameter is the `None` of an
/// `Option` member, there is no way to send a null.
fn without_null(schema: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = schema.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            schema.insert("type".into(), only);
        }
    }
    if let Some(Value::Array(variants)) = schema.get("anyOf") {
        let kept: Vec<&Value> = variants
            .iter()
            .filter(|v| v.get("type").and_then(Value::as_str) != Some("null"))
            .collect();
        if let [Value::Object(only)] = kept.as_slice() {
            let only = only.clone();
            schema.remove("anyOf");
            schema.extend(only);
        }
    }
}

/// The query parameters of `T` (a struct deserialized by `web::Query`), in the order of its
/// members' declaration, each adjusted by the entries of `adjust` that name it. Every entry of
/// `adjust` must name a member of `T` (checked by the tests of `paths.rs`).
pub(super) fn parameters<T: JsonSchema + DeserializeOwned>(
    adjust: &[(&str, Adjust)],
) -> Vec<Parameter> {
    let mut generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with(|s| {
            s.meta_schema = None;
            s.inline_subschemas = true;
        })
        .into_generator();
    let schema = Value::from(generator.root_schema_for::<T>());
    let required: Vec<&Value> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().collect())
        .unwrap_or_default();
    let Some(properties) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut parameters = Vec::with_capacity(properties.len());
    for (name, member) in properties {
        let mut member = match member {
            Value::Object(member) => member.clone(),
            _ => Map::new(),
        };
        let description = member
            .remove("description")
            .and_then(|d| d.as_str().map(unwrap_lines))
            .unwrap_or_default();
        without_null(&mut member);
        let mut member = Value::Object(member);
        bound_unsigned(&mut member);
        let mut parameter = Parameter::new(In::Query, name, member, &description);
        parameter.required = required.iter().any(|r| *r == name);
        let mut omit = false;
        for (_, change) in adjust.iter().filter(|(n, _)| n == name) {
            if let Value::Object(schema) = &mut parameter.schema {
                schema.extend(change.schema.clone());
            }
            if let Some(description) = &change.description {
                parameter.description.clone_from(description);
            }
            omit |= change.omit;
        }
        if !omit {
            parameters.push(parameter);
        }
    }
    let order = declared::<T>();
    parameters.sort_by_key(|p| {
        order
            .iter()
            .position(|n| *n == p.name)
            .unwrap_or(usize::MAX)
    });
    parameters
}

/// The names of the query parameters of `T` before adjustments.
#[cfg(test)]
pub(super) fn names<T: JsonSchema + DeserializeOwned>() -> Vec<String> {
    parameters::<T>(&[]).into_iter().map(|p| p.name).collect()
}

/// `parameters` as one exploded object parameter `name` of which a request gives at most one
/// member (`maxProperties: 1`), which separate parameters cannot say; each member keeps its
/// description in its schema.
pub(super) fn at_most_one(name: &str, description: &str, parameters: Vec<Parameter>) -> Parameter {
    let properties: Map<String, Value> = parameters
        .into_iter()
        .map(|p| {
            let mut schema = p.schema;
            schema["description"] = p.description.into();
            (p.name, schema)
        })
        .collect();
    let schema = serde_json::json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
        "maxProperties": 1,
    });
    let mut parameter = Parameter::new(In::Query, name, schema, description);
    parameter.style = Some("form");
    parameter.explode = Some(true);
    parameter
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query of the shape of the handlers'.
    #[derive(JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Sample {
        /// The first
        /// line.
        first: Option<u64>,
        /// Text.
        text: Option<String>,
        /// Needed.
        needed: u8,
    }

    #[test]
    fn one_parameter_per_member_with_its_doc_and_type() {
        let p = parameters::<Sample>(&[]);
        let by_name = |n: &str| p.iter().find(|p| p.name == n).cloned();
        let first = by_name("first").expect("first is a member");
        assert_eq!(first.description, "The first line.");
        assert_eq!(
            first.schema,
            serde_json::json!({"type": "integer", "minimum": 0, "maximum": u64::MAX})
        );
        assert!(!first.required);
        assert_eq!(first.location, In::Query);
        let text = by_name("text").expect("text is a member");
        assert_eq!(text.schema, serde_json::json!({"type": "string"}));
        let needed = by_name("needed").expect("needed is a member");
        assert!(needed.required);
    }

    /// A struct whose members are not in alphabetical order.
    #[derive(JsonSchema, serde::Deserialize)]
    #[allow(dead_code)]
    struct Unsorted {
        /// Second alphabetically.
        zeta: Option<u64>,
        /// First alphabetically.
        alpha: Option<u64>,
    }

    #[test]
    fn parameters_keep_the_declaration_order() {
        let names: Vec<String> = names::<Unsorted>();
        assert_eq!(names, ["zeta", "alpha"]);
    }

    #[test]
    fn adjustments_merge_replace_and_omit() {
        let p = parameters::<Sample>(&[
            (
                "first",
                Adjust::schema(serde_json::json!({"minimum": 1})).and_describe("One."),
            ),
            ("text", Adjust::omit()),
        ]);
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "first");
        assert_eq!(p[1].name, "needed");
        assert_eq!(p[0].schema["minimum"], 1);
        assert_eq!(p[0].description, "One.");
    }
}
