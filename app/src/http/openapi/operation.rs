//! The OpenAPI objects `paths.rs` builds (operations, parameters, request bodies, responses,
//! headers, links) as typed structs that serialize to their OpenAPI 3.1 form, so each route reads
//! as data and a misspelled member does not compile. Schemas stay [`Value`]s: they come from
//! schemars or are JSON Schema spelled out next to the route that needs them.
//!
//! Maps are [`BTreeMap`]s: the document's order is that of its keys, as everywhere else in it.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

/// A `$ref` to a component, or the object itself.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub(super) enum Or<T> {
    /// `{"$ref": "#/components/..."}`.
    Ref {
        /// The component's JSON pointer.
        #[serde(rename = "$ref")]
        reference: String,
    },
    /// The object inline.
    Item(T),
}

impl<T> Or<T> {
    /// A `$ref` to component `name` of `kind` (`headers`, `responses`).
    pub(super) fn component(kind: &str, name: &str) -> Or<T> {
        Or::Ref {
            reference: format!("#/components/{kind}/{name}"),
        }
    }
}

/// Where a parameter is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum In {
    /// A segment of the path template (always required).
    Path,
    /// The query string.
    Query,
    /// A request header.
    Header,
}

/// A parameter object.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Parameter {
    /// The parameter's name (case-insensitive for headers).
    pub(super) name: String,
    /// Where it is sent.
    #[serde(rename = "in")]
    pub(super) location: In,
    /// Whether a request must have it.
    pub(super) required: bool,
    /// What it means, with its default and what is refused.
    pub(super) description: String,
    /// `form` for an object spread over several query parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) style: Option<&'static str>,
    /// `true` with `style: form`: each member is its own query parameter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) explode: Option<bool>,
    /// The JSON Schema of its value.
    pub(super) schema: Value,
}

impl Parameter {
    /// A parameter at `location` (required only in the path).
    pub(super) fn new(location: In, name: &str, schema: Value, description: &str) -> Parameter {
        Parameter {
            name: name.to_owned(),
            location,
            required: location == In::Path,
            description: description.to_owned(),
            style: None,
            explode: None,
            schema,
        }
    }
}

/// A header object of a response.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Header {
    /// What it carries.
    pub(super) description: String,
    /// Whether every response of its kind has it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(super) required: bool,
    /// The JSON Schema of its value.
    pub(super) schema: Value,
}

impl Header {
    /// A header that every response of its kind has (`required`) or some do.
    pub(super) fn new(required: bool, schema: Value, description: &str) -> Or<Header> {
        Or::Item(Header {
            description: description.to_owned(),
            required,
            schema,
        })
    }
}

/// An example of a body.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Example {
    /// The example itself.
    pub(super) value: Value,
}

/// A body of one media type.
#[derive(Debug, Clone, Serialize)]
pub(super) struct MediaType {
    /// The JSON Schema of the body.
    pub(super) schema: Value,
    /// Examples, by name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) examples: BTreeMap<String, Example>,
}

/// A request body object.
#[derive(Debug, Clone, Serialize)]
pub(super) struct RequestBody {
    /// Whether a request must have one.
    pub(super) required: bool,
    /// The body by media type.
    pub(super) content: BTreeMap<String, MediaType>,
}

/// A link from a response to another operation.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Link {
    /// The operation linked to.
    pub(super) operation_id: String,
    /// Its parameters, as runtime expressions (`$request.path.id`).
    pub(super) parameters: BTreeMap<String, String>,
}

/// A response object.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Response {
    /// What the response means.
    pub(super) description: String,
    /// Its headers by name (`X-Request-Id` on every one).
    pub(super) headers: BTreeMap<String, Or<Header>>,
    /// Its body by media type; none for an empty body.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) content: BTreeMap<String, MediaType>,
    /// Operations that take a value of this response.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) links: BTreeMap<String, Link>,
}

impl Response {
    /// A response: `description`, the `X-Request-Id` header every response carries, and a body
    /// of `media_type` and `schema`.
    pub(super) fn new(description: &str, media_type: &str, schema: Value) -> Response {
        let mut response = Response::empty(description);
        response.content.insert(
            media_type.to_owned(),
            MediaType {
                schema,
                examples: BTreeMap::new(),
            },
        );
        response
    }

    /// A response without a body.
    pub(super) fn empty(description: &str) -> Response {
        Response {
            description: description.to_owned(),
            headers: BTreeMap::from([(
                "X-Request-Id".to_owned(),
                Or::component("headers", "X-Request-Id"),
            )]),
            content: BTreeMap::new(),
            links: BTreeMap::new(),
        }
    }

    /// With header `name`.
    pub(super) fn header(mut self, name: &str, header: Or<Header>) -> Response {
        self.headers.insert(name.to_owned(), header);
        self
    }

    /// With a link named `name` to operation `operation_id`, given the same `id` path parameter.
    pub(super) fn link_by_id(mut self, name: &str, operation_id: &str) -> Response {
        let parameters = BTreeMap::from([("id".to_owned(), "$request.path.id".to_owned())]);
        self.links.insert(
            name.to_owned(),
            Link {
                operation_id: operation_id.to_owned(),
                parameters,
            },
        );
        self
    }
}

/// A security requirement: scheme name to the scopes it needs.
pub(super) type Security = BTreeMap<String, Vec<String>>;

/// An operation object.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Operation {
    /// Unique over the document.
    pub(super) operation_id: String,
    /// The tags it is listed under.
    pub(super) tags: Vec<String>,
    /// One line.
    pub(super) summary: String,
    /// More, when there is more to say.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub(super) description: String,
    /// Path, query and header parameters.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) parameters: Vec<Parameter>,
    /// The request body, for the routes that read one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) request_body: Option<RequestBody>,
    /// Every status the operation can answer, by code.
    pub(super) responses: BTreeMap<u16, Or<Response>>,
    /// What it needs: no requirement (`[]`) when open.
    pub(super) security: Vec<Security>,
    /// The statuses answered with a problem, each a `$ref` to its response component once
    /// `paths.rs` adds the operation (unless `responses` has the status already).
    #[serde(skip)]
    pub(super) problems: Vec<u16>,
}

impl Operation {
    /// Operation `id` under `tag`, its one-line `summary`.
    pub(super) fn new(id: impl Into<String>, tag: &str, summary: impl Into<String>) -> Operation {
        Operation {
            operation_id: id.into(),
            tags: vec![tag.to_owned()],
            summary: summary.into(),
            description: String::new(),
            parameters: Vec::new(),
            request_body: None,
            responses: BTreeMap::new(),
            security: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// With `description`.
    pub(super) fn describe(mut self, description: impl Into<String>) -> Operation {
        self.description = description.into();
        self
    }

    /// With `parameters`, after those it has.
    pub(super) fn parameters(mut self, parameters: impl IntoIterator<Item = Parameter>) -> Self {
        self.parameters.extend(parameters);
        self
    }

    /// With a required JSON request body.
    pub(super) fn json_body(mut self, body: MediaType) -> Operation {
        self.request_body = Some(RequestBody {
            required: true,
            content: BTreeMap::from([("application/json".to_owned(), body)]),
        });
        self
    }

    /// With problem responses for `statuses`.
    pub(super) fn problems(mut self, statuses: &[u16]) -> Operation {
        self.problems.extend_from_slice(statuses);
        self
    }

    /// With `response` to `status`.
    pub(super) fn response(mut self, status: u16, response: Response) -> Operation {
        self.responses.insert(status, Or::Item(response));
        self
    }

    /// With `status` answered by `description` and a JSON body of `schema`.
    pub(super) fn json(self, status: u16, description: &str, schema: Value) -> Operation {
        self.response(
            status,
            Response::new(description, "application/json", schema),
        )
    }
}
