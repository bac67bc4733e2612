//! Black-box tests of the API description: `GET /openapi.json` and `GET /docs` of a real server
//! on 127.0.0.1 port 0.
//!
//! - The document is structurally valid OpenAPI 3.1: every `$ref` resolves, path templates and
//!   path parameters agree, operation ids are unique, security requirements and tags exist.
//! - It describes the server's routes, both ways: every route of the route table
//!   (`annals_app::http::ROUTES`, for every served aggregate type) is documented with its
//!   method; every documented operation reaches a handler (not the router's 404 or 405) and
//!   answers one of the statuses documented for it.
//! - What the server answers matches it: a scenario over every area (commands, rejections,
//!   conflicts, state, history, the log, the live feed, projections, views, health) checks each
//!   response's status, content type and JSON body against the documented schema (a small
//!   validator of the JSON Schema keywords the document uses; the full check, on generated
//!   requests, is the schemathesis run of `.ci/schemathesis`).
//! - `/docs` is one self-contained HTML page (no scripts, no external URLs), with the anchors
//!   that problem `type` URIs point to and a section per operation.
//! - With `auth.tokens`, every route but health and the description declares the bearer scheme
//!   with the scope its access level in `ROUTES` needs, a 401 and a 403; the rest is open.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use annals_app::http::access::Access;
use annals_app::http::aggregates::Aggregates;
use annals_app::http::problem::Kind;
use annals_app::http::ROUTES;
use annals_app::server::Server;
use annals_config::{Config, Token};
use awc::http::Method;
use serde_json::{json, Value};

/// Largest body read (the document and the page are well below it).
const BODY_BYTES_MAX: usize = 16 << 20;

/// A server in a temporary directory.
struct TestServer {
    server: Server,
    client: awc::Client,
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(tokens: &[&str]) -> TestServer {
        let dir = tempfile::tempdir().expect("a temporary data directory");
        let mut config = Config::default();
        config.server.addr = "127.0.0.1:0".parse().expect("a socket address");
        config.store.data_dir = dir.path().into();
        config.server.workers = std::num::NonZeroUsize::new(2).expect("2 > 0");
        config.runtime.arbiters = std::num::NonZeroUsize::new(2).expect("2 > 0");
        config.auth.tokens = tokens.iter().map(|t| Token::new(*t)).collect();
        let server = Server::start_ready(config)
            .await
            .unwrap_or_else(|e| panic!("the server starts: {e:#}"));
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish();
        TestServer {
            server,
            client,
            _dir: dir,
        }
    }

    async fn send(&self, request: &Request) -> Reply {
        let url = format!("{}{}", self.server.url(), request.path);
        let mut builder = self.client.request(request.method.clone(), url);
        for (name, value) in &request.headers {
            builder = builder.insert_header((name.as_str(), value.as_str()));
        }
        let what = format!("{} {}", request.method, request.path);
        let sent = match &request.body {
            Some(body) => {
                builder
                    .insert_header(("content-type", "application/json"))
                    .send_body(body.to_string())
                    .await
            }
            None => builder.send().await,
        };
        let mut response = sent.unwrap_or_else(|e| panic!("{what}: no answer: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let headers: BTreeMap<String, String> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        // The live feed never ends: its headers say enough.
        let body = if content_type.starts_with("text/event-stream") {
            Vec::new()
        } else {
            response
                .body()
                .limit(BODY_BYTES_MAX)
                .await
                .unwrap_or_else(|e| panic!("{what}: cannot read the body: {e}"))
                .to_vec()
        };
        Reply {
            what,
            status,
            content_type,
            headers,
            body,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        self.send(&Request::new(Method::GET, path)).await
    }

    async fn document(&self) -> Value {
        let reply = self.get("/openapi.json").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(media_type(&reply.content_type), "application/json");
        reply.json()
    }

    async fn stop(self) {
        self.server
            .stop()
            .await
            .unwrap_or_else(|e| panic!("the server stops cleanly: {e:#}"));
    }
}

#[derive(Debug, Clone)]
struct Request {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Option<Value>,
}

impl Request {
    fn new(method: Method, path: &str) -> Request {
        Request {
            method,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    fn body(mut self, body: Value) -> Request {
        self.body = Some(body);
        self
    }

    fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }
}

#[derive(Debug)]
struct Reply {
    what: String,
    status: u16,
    content_type: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{}: the body is not JSON ({e}): {}", self.what, self.text())
        })
    }
}

/// `type/subtype` of a `Content-Type` value.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

// ----- the document's structure -----

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Every operation: (path template, method, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("paths is an object");
    let mut out = Vec::new();
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (method, operation) in item {
            assert!(METHODS.contains(&method.as_str()), "{path}: {method}");
            out.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    out
}

/// Every `$ref` in `value`, with where it is.
fn references(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                if key == "$ref" {
                    if let Some(target) = item.as_str() {
                        out.push((at.to_owned(), target.to_owned()));
                    }
                }
                references(item, &format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                references(item, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The target of a local `$ref` in `doc`.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    doc.pointer(pointer)
}

/// `schema` with its `$ref` followed (once: components are not references to references).
fn deref<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => resolve(doc, reference).unwrap_or(schema),
        None => schema,
    }
}

/// The `{name}` segments of a path template.
fn template_parameters(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_owned)
        .collect()
}

/// Checks what OpenAPI 3.1 requires of the document's shape; returns every violation.
fn structural_errors(doc: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let version = doc["openapi"].as_str().unwrap_or_default();
    if !version.starts_with("3.1.") {
        errors.push(format!("openapi is {version:?}, not 3.1.x"));
    }
    for member in ["title", "version"] {
        if !doc["info"][member].is_string() {
            errors.push(format!("info.{member} is not a string"));
        }
    }
    let mut refs = Vec::new();
    references(doc, "#", &mut refs);
    for (at, target) in &refs {
        if !target.starts_with("#/") || resolve(doc, target).is_none() {
            errors.push(format!("{at}: $ref {target} does not resolve"));
        }
    }
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .map(|t| t.iter().filter_map(|t| t["name"].as_str()).collect())
        .unwrap_or_default();
    let mut ids = BTreeSet::new();
    for (path, method, op) in operations(doc) {
        let at = format!("{} {path}", method.to_uppercase());
        if !path.starts_with('/') {
            errors.push(format!("{at}: a path starts with /"));
        }
        match op["operationId"].as_str() {
            Some(id) if ids.insert(id.to_owned()) => {}
            other => errors.push(format!("{at}: operationId {other:?} missing or repeated")),
        }
        let responses = op["responses"].as_object().cloned().unwrap_or_default();
        if responses.is_empty() {
            errors.push(format!("{at}: no responses"));
        }
        for (status, response) in &responses {
            let valid = status == "default"
                || (status.len() == 3 && status.bytes().all(|b| b.is_ascii_digit()));
            if !valid {
                errors.push(format!("{at}: response key {status}"));
            }
            if !deref(doc, response)["description"].is_string() {
                errors.push(format!("{at}: response {status} has no description"));
            }
        }
        let mut declared = BTreeSet::new();
        let mut in_path = BTreeSet::new();
        for parameter in op["parameters"].as_array().cloned().unwrap_or_default() {
            let parameter = deref(doc, &parameter).clone();
            let name = parameter["name"].as_str().unwrap_or_default().to_owned();
            let location = parameter["in"].as_str().unwrap_or_default().to_owned();
            if !["query", "header", "path", "cookie"].contains(&location.as_str()) {
                errors.push(format!("{at}: parameter {name} is in {location:?}"));
            }
            if !parameter["schema"].is_object() {
                errors.push(format!("{at}: parameter {name} has no schema"));
            }
            if !declared.insert((name.clone(), location.clone())) {
                errors.push(format!("{at}: parameter {name} in {location} repeated"));
            }
            if location == "path" {
                if parameter["required"] != json!(true) {
                    errors.push(format!("{at}: path parameter {name} is not required"));
                }
                in_path.insert(name);
            }
        }
        if in_path != template_parameters(&path) {
            errors.push(format!(
                "{at}: path parameters {in_path:?} differ from the template's"
            ));
        }
        for requirement in op["security"].as_array().cloned().unwrap_or_default() {
            for name in requirement
                .as_object()
                .map(|r| r.keys().cloned().collect::<Vec<_>>())
                .unwrap_or_default()
            {
                if !schemes.contains_key(&name) {
                    errors.push(format!("{at}: security scheme {name} is not defined"));
                }
            }
        }
        for tag in op["tags"].as_array().cloned().unwrap_or_default() {
            if !tag.as_str().is_some_and(|t| tags.contains(t)) {
                errors.push(format!("{at}: tag {tag} is not listed"));
            }
        }
    }
    errors
}

// ----- the routes the server registers -----

/// The routes of the route table (`ROUTES`): (pattern, method, access), with `{aggregate}`
/// patterns expanded for every served aggregate type.
fn registered_routes() -> BTreeSet<(String, String)> {
    routes_with_access()
        .into_iter()
        .map(|(pattern, method, _)| (pattern, method))
        .collect()
}

fn routes_with_access() -> Vec<(String, String, Access)> {
    let mut routes = Vec::new();
    for route in ROUTES {
        let method = route.method.openapi().to_owned();
        if route.pattern.contains("{aggregate}") {
            for api in Aggregates::domain().iter() {
                let pattern = route.pattern.replace("{aggregate}", api.route());
                routes.push((pattern, method.clone(), route.access));
            }
        } else {
            routes.push((route.pattern.to_owned(), method, route.access));
        }
    }
    routes
}

/// Whether a concrete or template `path` is matched by route or template `pattern`, segment by
/// segment (a `{name}` on either side matches any segment).
fn matches(pattern: &str, path: &str) -> bool {
    let is_param = |s: &str| s.starts_with('{') && s.ends_with('}');
    let (a, b): (Vec<&str>, Vec<&str>) = (pattern.split('/').collect(), path.split('/').collect());
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|(x, y)| x == y || is_param(x) || is_param(y))
}

/// The documented operation answering `method` on concrete `path`: fixed segments win over
/// parameters, as in the server's route table.
fn operation_for<'a>(
    ops: &'a [(String, String, Value)],
    method: &str,
    path: &str,
) -> Option<&'a (String, String, Value)> {
    ops.iter()
        .filter(|(template, m, _)| m == method && matches(template, path))
        .max_by_key(|(template, _, _)| template.split('/').filter(|s| !s.starts_with('{')).count())
}

// ----- a small JSON Schema validator -----

/// Whether `value` is of JSON Schema type `kind`.
fn is_type(value: &Value, kind: &str) -> bool {
    match kind {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_u64() || value.is_i64() || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

/// Validates `value` against `schema` for the keywords the document uses (formats and
/// patterns are left to schemathesis); pushes what fails.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(keywords) = schema.as_object() else {
        if schema == &json!(false) {
            errors.push(format!("{at}: no value is allowed here"));
        }
        return;
    };
    if let Some(reference) = keywords.get("$ref").and_then(Value::as_str) {
        match resolve(doc, reference) {
            Some(target) => validate(doc, target, value, at, errors),
            None => errors.push(format!("{at}: $ref {reference} does not resolve")),
        }
    }
    match keywords.get("type") {
        Some(Value::String(kind)) if !is_type(value, kind) => {
            errors.push(format!("{at}: {value} is not of type {kind}"));
            return;
        }
        Some(Value::Array(kinds))
            if !kinds
                .iter()
                .filter_map(Value::as_str)
                .any(|k| is_type(value, k)) =>
        {
            errors.push(format!("{at}: {value} is not of type {kinds:?}"));
            return;
        }
        _ => {}
    }
    if let Some(expected) = keywords.get("const") {
        if expected != value {
            errors.push(format!("{at}: {value} is not {expected}"));
        }
    }
    if let Some(Value::Array(allowed)) = keywords.get("enum") {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    if let (Some(min), Some(n)) = (
        keywords.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n < min {
            errors.push(format!("{at}: {value} < {min}"));
        }
    }
    if let (Some(max), Some(n)) = (
        keywords.get("maximum").and_then(Value::as_f64),
        value.as_f64(),
    ) {
        if n > max {
            errors.push(format!("{at}: {value} > {max}"));
        }
    }
    if let Some(text) = value.as_str() {
        let chars = u64::try_from(text.chars().count()).unwrap_or(u64::MAX);
        if keywords
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars < m)
        {
            errors.push(format!("{at}: {text:?} is too short"));
        }
        if keywords
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars > m)
        {
            errors.push(format!("{at}: {text:?} is too long"));
        }
    }
    if let Some(Value::Array(all)) = keywords.get("allOf") {
        for sub in all {
            validate(doc, sub, value, at, errors);
        }
    }
    let passing = |subs: &Vec<Value>| {
        subs.iter()
            .filter(|sub| {
                let mut sub_errors = Vec::new();
                validate(doc, sub, value, at, &mut sub_errors);
                sub_errors.is_empty()
            })
            .count()
    };
    if let Some(Value::Array(any)) = keywords.get("anyOf") {
        if passing(any) == 0 {
            errors.push(format!("{at}: {value} matches none of anyOf"));
        }
    }
    if let Some(Value::Array(one)) = keywords.get("oneOf") {
        let n = passing(one);
        if n != 1 {
            errors.push(format!(
                "{at}: {value} matches {n} of oneOf, not exactly one"
            ));
        }
    }
    if let Some(not) = keywords.get("not") {
        let mut sub_errors = Vec::new();
        validate(doc, not, value, at, &mut sub_errors);
        if sub_errors.is_empty() {
            errors.push(format!("{at}: {value} matches `not`"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in keywords
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(name) {
                errors.push(format!("{at}: required member {name} is missing"));
            }
        }
        let properties = keywords.get("properties").and_then(Value::as_object);
        for (name, member) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => validate(doc, sub, member, &format!("{at}/{name}"), errors),
                None => {
                    if let Some(extra) = keywords.get("additionalProperties") {
                        validate(doc, extra, member, &format!("{at}/{name}"), errors);
                    }
                }
            }
        }
    }
    if let (Some(items), Some(array)) = (keywords.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}/{i}"), errors);
        }
    }
}

/// Checks `reply` against the document: the operation exists, the status is documented, the
/// content type is the documented one and a JSON body matches its schema.
fn check_reply(doc: &Value, ops: &[(String, String, Value)], request: &Request, reply: &Reply) {
    let method = request.method.as_str().to_ascii_lowercase();
    let path = request.path.split('?').next().unwrap_or_default();
    let (template, _, op) = operation_for(ops, &method, path)
        .unwrap_or_else(|| panic!("{}: no documented operation", reply.what));
    let status = reply.status.to_string();
    let documented = op["responses"].get(&status).unwrap_or_else(|| {
        panic!(
            "{}: status {status} is not documented for {} {template}; body {}",
            reply.what,
            method.to_uppercase(),
            reply.text()
        )
    });
    let response = deref(doc, documented);
    let content = response["content"].as_object().cloned().unwrap_or_default();
    let media = media_type(&reply.content_type);
    if content.is_empty() {
        return;
    }
    let described = content.get(&media).unwrap_or_else(|| {
        panic!(
            "{}: content type {media} is not documented for {status} (documented: {:?})",
            reply.what,
            content.keys().collect::<Vec<_>>()
        )
    });
    for (name, header) in response["headers"].as_object().cloned().unwrap_or_default() {
        if deref(doc, &header)["required"] == json!(true) {
            assert!(
                reply.headers.contains_key(&name.to_ascii_lowercase()),
                "{}: required header {name} is missing from the {status}",
                reply.what
            );
        }
    }
    if media.ends_with("json") {
        let mut errors = Vec::new();
        validate(
            doc,
            &described["schema"],
            &reply.json(),
            "body",
            &mut errors,
        );
        assert!(
            errors.is_empty(),
            "{}: the {status} body does not match the document:\n{}\nbody: {}",
            reply.what,
            errors.join("\n"),
            reply.text()
        );
    }
}

/// A request for documented operation `op`: path parameters from their examples (or a
/// placeholder), the body from the first documented example.
fn probe(template: &str, method: &str, op: &Value, doc: &Value) -> Request {
    let mut path = template.to_owned();
    for parameter in op["parameters"].as_array().cloned().unwrap_or_default() {
        let parameter = deref(doc, &parameter);
        if parameter["in"] != "path" {
            continue;
        }
        let schema = &parameter["schema"];
        let value = match schema["examples"].get(0) {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None if schema["type"] == "integer" => "1".to_owned(),
            None => "probe".to_owned(),
        };
        let name = parameter["name"].as_str().unwrap_or_default();
        path = path.replace(&format!("{{{name}}}"), &value);
    }
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("a method");
    let mut request = Request::new(method, &path);
    if let Some(media) = op["requestBody"]["content"]["application/json"].as_object() {
        let example = media
            .get("examples")
            .and_then(Value::as_object)
            .and_then(|e| e.values().next())
            .map(|e| e["value"].clone())
            .unwrap_or_else(|| json!({}));
        request = request.body(example);
    }
    request
}

#[actix_rt::test]
async fn the_document_is_valid_openapi_3_1() {
    let server = TestServer::start(&[]).await;
    let doc = server.document().await;
    let errors = structural_errors(&doc);
    assert!(
        errors.is_empty(),
        "the document is not valid:\n{}",
        errors.join("\n")
    );
    // Generated from the domain: every command type of every served aggregate is a variant of
    // its documented request body.
    for api in Aggregates::domain().iter() {
        let path = format!("/v1/{}/{{id}}/commands", api.route());
        let body = &doc["paths"][&path]["post"]["requestBody"]["content"]["application/json"];
        let schema = deref(&doc, &body["schema"]);
        for command in api.command_types() {
            let tags_match = schema["oneOf"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|v| v["properties"]["type"]["const"] == *command)
            });
            assert!(tags_match, "{path}: no variant for {command}");
        }
    }
    server.stop().await;
}

#[actix_rt::test]
async fn every_route_is_documented_and_every_operation_is_routed() {
    let server = TestServer::start(&[]).await;
    let doc = server.document().await;
    let ops = operations(&doc);
    let routes = registered_routes();
    assert!(
        routes.len() >= 20 && routes.contains(&("/openapi.json".to_owned(), "get".to_owned())),
        "the route table is not complete: {routes:?}"
    );
    for (pattern, method) in &routes {
        assert!(
            ops.iter()
                .any(|(path, m, _)| m == method && matches(pattern, path)),
            "route {} {pattern} is not in the document",
            method.to_uppercase()
        );
    }
    for (path, method, _) in &ops {
        assert!(
            routes
                .iter()
                .any(|(pattern, m)| m == method && matches(pattern, path)),
            "documented {} {path} is not a route of ROUTES",
            method.to_uppercase()
        );
    }
    // Each documented operation reaches its handler and answers a documented status.
    for (template, method, op) in &ops {
        let request = probe(template, method, op, &doc);
        let reply = server.send(&request).await;
        let router_default =
            reply.status == 405 || (reply.status == 404 && reply.text().contains("no route for"));
        assert!(
            !router_default,
            "{}: not routed: {}",
            reply.what,
            reply.text()
        );
        check_reply(&doc, &ops, &request, &reply);
    }
    server.stop().await;
}

#[actix_rt::test]
async fn responses_match_the_document() {
    let server = TestServer::start(&[]).await;
    let doc = server.document().await;
    let ops = operations(&doc);
    let post = |path: &str, body: Value| Request::new(Method::POST, path).body(body);
    let get = |path: &str| Request::new(Method::GET, path);
    let mut check = Vec::new();

    let created = post(
        "/v1/customers/c-1/commands",
        json!({"type": "CreateCustomer", "name": "Ada", "credit_limit": 10_000}),
    )
    .header("Idempotency-Key", "create-c-1");
    let reply = server.send(&created).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    check_reply(&doc, &ops, &created, &reply);
    let position = reply.json()["position"].as_u64().expect("a position");
    let order = post(
        "/v1/orders/o-1/commands",
        json!({"type": "CreateOrder", "customer_id": "c-1", "total": 500}),
    );
    check.push((order, 200));
    check.push((created.clone(), 200)); // replayed
    check.push((
        post(
            "/v1/customers/c-1/commands",
            json!({"type": "CreateCustomer", "name": "Ada", "credit_limit": 1}),
        ),
        422,
    ));
    check.push((
        post(
            "/v1/customers/c-1/commands",
            json!({"type": "CreateCustomer", "name": "Ada", "credit_limit": 1}),
        )
        .header("If-Match", "\"7\""),
        409,
    ));
    // A process-only command (sent by the saga) is refused on the public API.
    check.push((
        post(
            "/v1/customers/c-1/commands",
            json!({"type": "ReleaseCredit", "order_id": "o-9"}),
        ),
        403,
    ));
    check.push((
        post(
            "/v1/customers/c-1/commands",
            json!({"type": "CreateCustomer", "name": "Ada", "credit_limit": 1}),
        )
        .header("If-Match", "W/\"1\""),
        412,
    ));
    check.push((
        post("/v1/customers/c-1/commands", json!({"type": "Nope"})),
        400,
    ));
    check.push((
        post(
            "/v1/accounts/a-1/commands",
            json!({"type": "Withdraw", "amount": 5}),
        ),
        422,
    ));
    check.push((
        post(
            "/v1/accounts/a-1/commands",
            json!({"type": "Deposit", "amount": 5}),
        ),
        200,
    ));
    check.push((get("/v1/customers/c-1"), 200));
    check.push((get("/v1/customers/c-1?version=1"), 200));
    check.push((get("/v1/customers/c-1?as_of=2001-01-01T00:00:00Z"), 404));
    check.push((get("/v1/customers/c-1?version=0"), 400));
    check.push((get("/v1/customers/nobody"), 404));
    check.push((get("/v1/orders/o-1/events?from=1&limit=10"), 200));
    check.push((get("/v1/accounts/a-1/events"), 200));
    check.push((get("/v1/events?after=0&limit=2"), 200));
    check.push((get("/v1/events?limit=0"), 400));
    check.push((get("/v1/events/live?after=0"), 200));
    check.push((get("/v1/events/live").header("Last-Event-ID", "x"), 400));
    check.push((get("/v1/projections"), 200));
    check.push((get("/v1/projections/nope/parked"), 404));
    check.push((get("/v1/projections/customer-summaries/parked"), 200));
    check.push((
        Request::new(Method::POST, "/v1/projections/nope/rebuild"),
        404,
    ));
    check.push((
        Request::new(Method::POST, "/v1/projections/x/parked/y/retry"),
        400,
    ));
    check.push((
        get(&format!("/v1/views/customers/c-1?min_position={position}")),
        200,
    ));
    check.push((get("/v1/views/customers/c-1/orders"), 200));
    check.push((get("/v1/views/valuable-customers?min_order_total=1"), 200));
    check.push((
        get("/v1/views/valuable-customers?created_after=yesterday"),
        400,
    ));
    check.push((get("/livez"), 200));
    check.push((get("/readyz"), 200));
    check.push((get("/metrics"), 200));
    check.push((get("/docs"), 200));
    check.push((
        Request::new(Method::POST, "/v1/projections/customer-summaries/rebuild"),
        202,
    ));
    for (request, status) in &check {
        let reply = server.send(request).await;
        assert_eq!(reply.status, *status, "{}: {}", reply.what, reply.text());
        check_reply(&doc, &ops, request, &reply);
    }
    // A method a route does not have: the 405 the document describes (components), with the
    // headers it requires.
    let reply = server.send(&Request::new(Method::PUT, "/v1/events")).await;
    assert_eq!(reply.status, 405, "{}", reply.text());
    let described = &doc["components"]["responses"]["MethodNotAllowed"];
    let schema = &described["content"]["application/problem+json"]["schema"];
    let mut errors = Vec::new();
    validate(&doc, schema, &reply.json(), "body", &mut errors);
    assert!(errors.is_empty(), "405: {}", errors.join("\n"));
    for (name, header) in described["headers"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        if deref(&doc, &header)["required"] == json!(true) {
            assert!(
                reply.headers.contains_key(&name.to_ascii_lowercase()),
                "405: no {name}"
            );
        }
    }
    // A body that is not JSON.
    let reply = {
        let url = format!("{}/v1/customers/c-2/commands", server.server.url());
        let mut response = server
            .client
            .post(url)
            .insert_header(("content-type", "text/plain"))
            .send_body("hello")
            .await
            .expect("an answer");
        let body = response.body().await.expect("a body").to_vec();
        Reply {
            what: "POST text/plain".into(),
            status: response.status().as_u16(),
            content_type: media_type(
                response
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default(),
            ),
            headers: BTreeMap::new(),
            body,
        }
    };
    assert_eq!(reply.status, 415);
    let request = Request::new(Method::POST, "/v1/customers/c-2/commands");
    check_reply(&doc, &ops, &request, &reply);
    server.stop().await;
}

#[actix_rt::test]
async fn the_docs_page_is_self_contained_with_every_problem_anchor() {
    let server = TestServer::start(&[]).await;
    let doc = server.document().await;
    let reply = server.get("/docs").await;
    assert_eq!(reply.status, 200);
    assert_eq!(media_type(&reply.content_type), "text/html");
    let html = reply.text();
    for kind in Kind::ALL {
        let anchor = kind
            .type_uri()
            .strip_prefix("/docs#")
            .unwrap_or_else(|| panic!("{kind:?}: the type URI points into /docs"));
        assert!(
            html.contains(&format!("id=\"{anchor}\"")),
            "/docs has no anchor {anchor}"
        );
    }
    // A real problem's type resolves to a section of the page.
    let problem = server.get("/v1/nothing/here/at/all").await.json();
    let anchor = problem["type"]
        .as_str()
        .unwrap_or_default()
        .replace("/docs#", "");
    assert!(html.contains(&format!("id=\"{anchor}\"")), "{problem}");
    for (_, _, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            html.contains(&format!("id=\"op-{id}\"")),
            "no section for {id}"
        );
    }
    // Nothing from elsewhere: no scripts, no external URLs, every link local and resolving.
    let lower = html.to_ascii_lowercase();
    for forbidden in [
        "<script", "http://", "https://", "src=", "@import", "url(", "<link", "<iframe",
    ] {
        assert!(!lower.contains(forbidden), "/docs contains {forbidden:?}");
    }
    let ids: BTreeSet<&str> = html
        .split("id=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
        .collect();
    for link in html
        .split("href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next())
    {
        match link.strip_prefix('#') {
            Some(target) => assert!(ids.contains(target), "/docs links to a missing #{target}"),
            None => assert!(
                link.starts_with('/'),
                "/docs links outside the server: {link}"
            ),
        }
    }
    server.stop().await;
}

/// With tokens, every operation declares what its route's access level in `ROUTES` needs: the
/// bearer scheme with the route's scope, a 401 and a 403; open routes declare nothing. The
/// answers to a request without a token, with a token lacking the scope and with one having
/// it are the documented ones.
#[actix_rt::test]
async fn with_tokens_every_route_declares_its_scope() {
    let admin = "a-token-of-the-right-length-0123456789";
    let reader = "a-reading-token-of-the-right-length-01";
    let dir = tempfile::tempdir().expect("a temporary data directory");
    let mut config = Config::default();
    config.server.addr = "127.0.0.1:0".parse().expect("a socket address");
    config.store.data_dir = dir.path().into();
    config.server.workers = std::num::NonZeroUsize::new(2).expect("2 > 0");
    config.runtime.arbiters = std::num::NonZeroUsize::new(2).expect("2 > 0");
    config.auth.tokens = vec![
        Token::new(admin),
        Token::scoped(
            reader,
            annals_config::Scopes::of(&[annals_config::Scope::Read]),
        ),
    ];
    let server = TestServer {
        server: Server::start_ready(config)
            .await
            .unwrap_or_else(|e| panic!("the server starts: {e:#}")),
        client: awc::Client::builder()
            .timeout(Duration::from_secs(30))
            .finish(),
        _dir: dir,
    };
    // The description stays open.
    let doc = server.document().await;
    assert_eq!(server.get("/docs").await.status, 200);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    let routes = routes_with_access();
    for (path, method, op) in operations(&doc) {
        let (_, _, access) = routes
            .iter()
            .find(|(pattern, m, _)| *m == method && matches(pattern, &path))
            .unwrap_or_else(|| panic!("{method} {path} is not a route"));
        let security = op["security"].as_array().cloned().unwrap_or_default();
        match access {
            Access::Open => {
                assert!(security.is_empty(), "{method} {path} needs no token");
                assert!(
                    op["responses"].get("401").is_none(),
                    "{method} {path} never answers 401"
                );
            }
            access => {
                let scopes: Vec<&str> = access.scope().map(|s| s.name()).into_iter().collect();
                assert_eq!(
                    security,
                    vec![json!({ "bearerAuth": scopes })],
                    "{method} {path}"
                );
                for status in ["401", "403"] {
                    assert!(
                        op["responses"].get(status).is_some(),
                        "{method} {path} has no {status}"
                    );
                }
            }
        }
    }
    let ops = operations(&doc);
    for (path, with_reader) in [
        ("/v1/events", 200),
        ("/metrics", 403),
        ("/v1/customers/c-1", 404),
    ] {
        let request = Request::new(Method::GET, path);
        let reply = server.send(&request).await;
        assert_eq!(reply.status, 401, "{path}");
        check_reply(&doc, &ops, &request, &reply);
        let request =
            Request::new(Method::GET, path).header("Authorization", &format!("Bearer {reader}"));
        let reply = server.send(&request).await;
        assert_eq!(reply.status, with_reader, "{path} with a read token");
        check_reply(&doc, &ops, &request, &reply);
        let request =
            Request::new(Method::GET, path).header("Authorization", &format!("Bearer {admin}"));
        let reply = server.send(&request).await;
        assert!(
            reply.status == 200 || reply.status == 404,
            "{path} with every scope"
        );
        check_reply(&doc, &ops, &request, &reply);
    }
    server.stop().await;
}

#[actix_rt::test]
async fn without_tokens_nothing_declares_auth() {
    let server = TestServer::start(&[]).await;
    let doc = server.document().await;
    for (path, method, op) in operations(&doc) {
        assert_eq!(op["security"], json!([]), "{method} {path}");
        assert!(op["responses"].get("401").is_none(), "{method} {path}");
    }
    server.stop().await;
}
