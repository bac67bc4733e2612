//! The schemas of the API description, derived with `schemars` from the types themselves: the
//! domain's (commands, events, states, rejections, read models) and the HTTP bodies the
//! handlers serialize ([`crate::wire`]: envelopes, replies, pages, problem details), so a
//! changed type changes the document.
//!
//! Written here by hand: each aggregate type's narrowing of the generic replies, the union of
//! envelopes, the live feed's events (Server-Sent Events, not JSON), and the members of each
//! kind of problem (`kinds.rs`). The fuzzing run (`.ci/schemathesis`) checks every response
//! the server gives against the document.

use annals::Aggregate;
use annals_domain::{bank, customer, order, views};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::super::problem::Kind;
use crate::wire::{self, api, cbor};

/// An envelope of any aggregate type, its payload as the CBOR mapping writes it.
type AnyEnvelope = wire::Envelope<'static, cbor::Json<'static>>;

/// Where component schemas live, for `$ref`.
pub(super) const SCHEMAS: &str = "#/components/schemas/";

/// A `$ref` to component schema `name`.
pub(super) fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMAS}{name}") })
}

/// The largest value of a Rust unsigned integer type, by the `format` schemars gives it. JSON
/// Schema has no unsigned formats, so the bound is spelled out: a fuzzer (or a client) that
/// sends more gets a 400 from serde, which the document must not call valid.
fn unsigned_max(format: &str) -> Option<u64> {
    match format {
        "uint8" => Some(u8::MAX.into()),
        "uint16" => Some(u16::MAX.into()),
        "uint32" => Some(u32::MAX.into()),
        "uint64" | "uint" => Some(u64::MAX),
        _ => None,
    }
}

/// Replaces schemars' non-standard unsigned formats with explicit bounds, everywhere in `schema`.
pub(super) fn bound_unsigned(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            let max = map
                .get("format")
                .and_then(Value::as_str)
                .and_then(unsigned_max);
            if let Some(max) = max {
                // A bound the type states (`range(min = 1)`) is kept.
                map.remove("format");
                map.entry("minimum").or_insert_with(|| 0.into());
                map.entry("maximum").or_insert_with(|| max.into());
            }
            map.values_mut().for_each(bound_unsigned);
        }
        Value::Array(items) => items.iter_mut().for_each(bound_unsigned),
        _ => {}
    }
}

/// The `created_at` members of the read models: the views store microseconds, the API renders
/// them as RFC 3339 text (`with_times` in `read.rs`).
const VIEW_TIME_FIELDS: [&str; 1] = ["created_at"];

/// The read models whose [`VIEW_TIME_FIELDS`] the API renders as text.
const VIEW_SCHEMAS: [&str; 3] = ["CustomerSummary", "OrderListEntry", "ValuableCustomer"];

/// An RFC 3339 time as the API writes it ([`wire::time`]), with `description`.
pub(super) fn time(description: &str) -> Value {
    let mut schema = Value::from(wire::time::Rfc3339::json_schema(&mut generator(true)));
    schema["description"] = description.into();
    schema
}

/// `name` with its indefinite article (`an Account`, `a Customer`).
pub(super) fn a(name: &str) -> String {
    let vowel = name
        .chars()
        .next()
        .is_some_and(|c| "AEIOUaeiou".contains(c));
    format!("{} {name}", if vowel { "an" } else { "a" })
}

/// The JSON Schemas of one aggregate type served by the API.
#[derive(Debug, Clone)]
pub(crate) struct AggregateSchemas {
    /// The aggregate type name (`Customer`), as `ApiAggregate::type_name` has it.
    pub(crate) type_name: &'static str,
    /// The command enum's schema name (a request body).
    pub(crate) command: String,
    /// The event enum's schema name.
    pub(crate) event: String,
    /// The state's schema name.
    pub(crate) state: String,
    /// The rejection enum's schema name.
    pub(crate) rejection: String,
    /// The `type` tags of the command enum's variants, read from its schema.
    pub(crate) command_types: Vec<String>,
    /// Example commands, serialized by serde (so they are valid by construction).
    pub(crate) examples: Vec<(String, Value)>,
}

/// Every schema of the document, and what is known about each aggregate type.
#[derive(Debug)]
pub(crate) struct Schemas {
    /// `components.schemas`.
    pub(crate) components: Map<String, Value>,
    /// The aggregate types whose schemas are known, by type name.
    pub(crate) aggregates: Vec<AggregateSchemas>,
}

/// Generates the schemas of `A`: its command with `commands` (the deserialize contract: what
/// the server accepts), the rest with `responses` (what it writes).
fn aggregate<A>(
    commands: &mut SchemaGenerator,
    responses: &mut SchemaGenerator,
    examples: &[A::Command],
) -> AggregateSchemas
where
    A: Aggregate + JsonSchema,
    A::Command: JsonSchema,
    A::Event: JsonSchema,
    A::Rejection: JsonSchema + Serialize,
{
    commands.subschema_for::<A::Command>();
    responses.subschema_for::<A>();
    responses.subschema_for::<A::Event>();
    responses.subschema_for::<A::Rejection>();
    let examples = examples
        .iter()
        .filter_map(|command| {
            let value = serde_json::to_value(command).ok()?;
            let name = value.get("type")?.as_str()?.to_owned();
            Some((name, value))
        })
        .collect();
    AggregateSchemas {
        type_name: A::TYPE,
        command: A::Command::schema_name().into_owned(),
        event: A::Event::schema_name().into_owned(),
        state: A::schema_name().into_owned(),
        rejection: A::Rejection::schema_name().into_owned(),
        command_types: Vec::new(),
        examples,
    }
}

/// The `const` of the `type` member of each variant of a tagged enum's schema.
fn variant_tags(schema: &Value) -> Vec<String> {
    schema
        .get("oneOf")
        .and_then(Value::as_array)
        .map(|variants| {
            variants
                .iter()
                .filter_map(|v| v.pointer("/properties/type/const")?.as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// A generator of 2020-12 schemas into `components.schemas`; `serialize`: of what serde writes
/// (responses), else of what it reads (requests).
fn generator(serialize: bool) -> SchemaGenerator {
    let settings = SchemaSettings::draft2020_12();
    let settings = if serialize {
        settings.for_serialize()
    } else {
        settings.for_deserialize()
    };
    settings
        .with(|s| {
            // OpenAPI 3.1's default dialect is JSON Schema 2020-12: no `$schema` needed.
            s.meta_schema = None;
            s.definitions_path = "/components/schemas".into();
        })
        .into_generator()
}

impl Schemas {
    /// The domain's schemas (every aggregate type the service registers in
    /// `Aggregates::domain`, and the read models) and the HTTP shapes.
    pub(crate) fn domain() -> Schemas {
        use customer::CustomerCommand as C;
        use order::OrderCommand as O;
        let mut commands = generator(false);
        let mut responses = generator(true);
        let mut aggregates = vec![
            aggregate::<customer::Customer>(
                &mut commands,
                &mut responses,
                &[
                    C::CreateCustomer {
                        name: "Ada Lovelace".into(),
                        credit_limit: 100_000,
                        currency: None,
                    },
                    C::ReserveCredit {
                        order_id: "o-1".into(),
                        amount: 5_000,
                        currency: Some("EUR".into()),
                    },
                ],
            ),
            aggregate::<order::Order>(
                &mut commands,
                &mut responses,
                &[
                    O::CreateOrder {
                        customer_id: "c-1".into(),
                        total: 5_000,
                        currency: Some("EUR".into()),
                    },
                    O::ShipOrder,
                ],
            ),
            aggregate::<bank::Account>(
                &mut commands,
                &mut responses,
                &[bank::AccountCommand::Deposit { amount: 1_000 }],
            ),
        ];
        // The HTTP bodies (`crate::wire`), generic members at their widest; the aggregate
        // types narrow them in `add_http_shapes`.
        responses.subschema_for::<AnyEnvelope>();
        responses.subschema_for::<api::CommandReply<'static, AnyEnvelope>>();
        responses.subschema_for::<api::StateReply<'static, Value>>();
        responses.subschema_for::<api::History<'static, AnyEnvelope>>();
        responses.subschema_for::<api::LogPage<AnyEnvelope>>();
        responses.subschema_for::<api::Subscribers<'static>>();
        responses.subschema_for::<api::RebuildStarted<'static>>();
        responses.subschema_for::<api::ParkedEvents<'static>>();
        responses.subschema_for::<api::ParkedRetried<'static>>();
        responses.subschema_for::<api::CustomerOrders<'static, views::OrderListEntry>>();
        responses.subschema_for::<api::ValuableCustomers<views::ValuableCustomer>>();
        responses.subschema_for::<api::Live>();
        responses.subschema_for::<api::Overview<'static>>();
        responses.subschema_for::<api::AggregateIds>();
        responses.subschema_for::<api::Chain<AnyEnvelope>>();
        responses.subschema_for::<api::Ready>();
        responses.subschema_for::<api::Problem<'static>>();
        responses.subschema_for::<views::CustomerSummary>();
        responses.subschema_for::<views::OrderListEntry>();
        responses.subschema_for::<views::ValuableCustomer>();

        let mut components = responses.take_definitions(true);
        for (name, schema) in commands.take_definitions(true) {
            // The two contracts share no type today; if one ever appears in both, it must
            // have one shape, or the document would say two things about it.
            if let Some(other) = components.get(&name) {
                debug_assert_eq!(
                    other, &schema,
                    "{name} differs between request and response"
                );
            }
            components.insert(name, schema);
        }
        for name in VIEW_SCHEMAS {
            if let Some(props) = components
                .get_mut(name)
                .and_then(|s| s.get_mut("properties"))
                .and_then(Value::as_object_mut)
            {
                for field in VIEW_TIME_FIELDS {
                    if let Some(old) = props.get(field) {
                        let description = old
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned();
                        props.insert(field.into(), time(&description));
                    }
                }
            }
        }
        for schema in components.values_mut() {
            bound_unsigned(schema);
        }
        for aggregate in &mut aggregates {
            aggregate.command_types = components
                .get(&aggregate.command)
                .map(variant_tags)
                .unwrap_or_default();
        }
        let mut schemas = Schemas {
            components,
            aggregates,
        };
        schemas.add_http_shapes();
        schemas
    }

    /// The schemas of aggregate type `type_name`, if known.
    pub(crate) fn aggregate(&self, type_name: &str) -> Option<&AggregateSchemas> {
        self.aggregates.iter().find(|a| a.type_name == type_name)
    }

    fn add(&mut self, name: &str, schema: Value) {
        self.components.insert(name.to_owned(), schema);
    }

    /// The HTTP shapes that are not types: each aggregate type's narrowing of the generic
    /// replies (its events, its state), the union of every envelope, and the live feed's
    /// Server-Sent Events.
    fn add_http_shapes(&mut self) {
        let typed: Vec<(String, String, String)> = self
            .aggregates
            .iter()
            .map(|a| (a.type_name.to_owned(), a.event.clone(), a.state.clone()))
            .collect();
        for (type_name, event, state) in &typed {
            let envelope = format!("{type_name}Envelope");
            let narrowed = |base: &str, description: String, properties: Value| {
                json!({
                    "description": description,
                    "allOf": [reference(base), {"properties": properties}],
                })
            };
            self.add(
                &envelope,
                narrowed(
                    "Envelope",
                    format!("An event of {}.", a(type_name)),
                    json!({"aggregate": {"const": type_name}, "data": reference(event)}),
                ),
            );
            let events = json!({"events": {"items": reference(&envelope)}});
            self.add(
                &format!("{type_name}CommandReply"),
                narrowed(
                    "CommandReply",
                    format!("The outcome of a command to {}.", a(type_name)),
                    events.clone(),
                ),
            );
            self.add(
                &format!("{type_name}StateReply"),
                narrowed(
                    "StateReply",
                    format!("The state of {} at a version.", a(type_name)),
                    json!({"state": reference(state)}),
                ),
            );
            self.add(
                &format!("{type_name}History"),
                narrowed(
                    "History",
                    format!("A page of the events of {}, oldest first.", a(type_name)),
                    events,
                ),
            );
        }
        let served: Vec<&String> = typed.iter().map(|(name, ..)| name).collect();
        let mut any_event: Vec<Value> = served
            .iter()
            .map(|name| reference(&format!("{name}Envelope")))
            .collect();
        any_event.push(json!({
            "description": "An event of an aggregate type this server does not serve, its \
                payload converted from CBOR by the lossless mapping (`data`).",
            "allOf": [
                reference("Envelope"),
                {"properties": {"aggregate": {"not": {"enum": served}}}},
            ],
        }));
        self.add("AnyEnvelope", json!({"oneOf": any_event}));
        if let Some(items) = self
            .components
            .get_mut("LogPage")
            .and_then(|page| page.pointer_mut("/properties/events/items"))
        {
            *items = reference("AnyEnvelope");
        }
        // `log::frame`: one event of the live feed, as an SSE client reads it (the `retry:`
        // line and the keep-alive comments are not events).
        self.add(
            "LiveEvent",
            json!({
                "description": "An event of the live feed (`GET /v1/events/live`): `id:` is its \
                    position, `data:` its envelope as one line of JSON.",
                "type": "object",
                "properties": {
                    "id": {"type": "string", "pattern": "^[1-9][0-9]*$",
                        "description": "The event's position: the `Last-Event-ID` to resume after it."},
                    "event": {"const": "message", "description": "No `event:` field is sent."},
                    "data": {"type": "string", "contentMediaType": "application/json",
                        "contentSchema": reference("AnyEnvelope")},
                },
                "required": ["id", "data"],
            }),
        );
        self.add_problems();
    }

    /// `Problem` (`problem::Problem::body`) and one schema per [`Kind`], named after its
    /// anchor in `/docs` (`problem-bad-request`).
    fn add_problems(&mut self) {
        for kind in Kind::ALL {
            let mut properties = Map::new();
            properties.insert("type".into(), json!({"const": kind.type_uri()}));
            properties.insert("title".into(), json!({"const": kind.title()}));
            properties.insert("status".into(), json!({"const": kind.status().as_u16()}));
            let mut required = vec![Value::from("type")];
            for member in super::kinds::extensions(kind) {
                properties.insert(member.name.into(), member.schema);
                if member.required {
                    required.push(member.name.into());
                }
            }
            self.add(
                &problem_schema(kind),
                json!({
                    "description": super::kinds::describe(kind),
                    "allOf": [
                        reference("Problem"),
                        {"properties": properties, "required": required},
                    ],
                }),
            );
        }
    }
}

/// The schema name of `kind`'s problem: its `/docs` anchor (`problem-bad-request`).
pub(crate) fn problem_schema(kind: Kind) -> String {
    anchor(kind).to_owned()
}

/// The anchor of `kind` in `/docs`: its `type` URI's fragment.
pub(crate) fn anchor(kind: Kind) -> &'static str {
    let uri = kind.type_uri();
    uri.split_once('#').map_or(uri, |(_, fragment)| fragment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::aggregates::Aggregates;

    #[test]
    fn every_served_aggregate_has_schemas_and_the_same_command_types() {
        let schemas = Schemas::domain();
        for api in Aggregates::domain().iter() {
            let known = schemas.aggregate(api.type_name());
            let known = known.unwrap_or_else(|| panic!("no schemas for {}", api.type_name()));
            let mut documented = known.command_types.clone();
            let mut served: Vec<String> = api
                .command_types()
                .iter()
                .map(|t| (*t).to_owned())
                .collect();
            documented.sort();
            served.sort();
            assert_eq!(documented, served, "command types of {}", api.type_name());
        }
    }

    #[test]
    fn unsigned_integers_are_bounded_and_times_are_text() {
        let schemas = Schemas::domain();
        let text = serde_json::to_string(&schemas.components).unwrap_or_default();
        assert!(
            !text.contains("\"uint"),
            "a schemars unsigned format is left"
        );
        let created = &schemas.components["CustomerSummary"]["properties"]["created_at"];
        assert_eq!(created["format"], "date-time");
        let limit = &schemas.components["Customer"]["properties"]["credit_limit"];
        assert_eq!(limit["maximum"], u64::MAX);
    }

    #[test]
    fn examples_are_of_known_command_types() {
        for aggregate in Schemas::domain().aggregates {
            assert!(!aggregate.examples.is_empty());
            for (name, _) in &aggregate.examples {
                assert!(aggregate.command_types.contains(name), "{name}");
            }
        }
    }
}
