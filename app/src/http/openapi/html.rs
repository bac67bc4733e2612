//! `/docs`: the OpenAPI document rendered as one HTML page, with nothing loaded from elsewhere
//! (no scripts at all, styles inline), so it works on a machine without internet access.
//!
//! The page is a function of the document alone, plus [`Kind::ALL`] for the problem sections
//! whose anchors (`#problem-bad-request`) the `type` of every problem links to.

use std::fmt::Write as _;

use serde_json::Value;

use super::super::problem::Kind;
use super::schemas::anchor;

const STYLE: &str = "
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1d1d1f;background:#fff}
header,main,nav{max-width:72rem;margin:0 auto;padding:0 1.5rem}
header{padding-top:1.5rem}
h1{margin:.2em 0}h1 small{font-weight:normal;color:#666;font-size:.55em}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2.5em}
h3{margin:1.8em 0 .4em}
article,.problem,.schema{border:1px solid #e3e3e3;border-radius:6px;padding:.2em 1em 1em;margin:1em 0}
code,pre{font:13px/1.4 ui-monospace,Menlo,Consolas,monospace;background:#f5f5f7;border-radius:3px}
code{padding:0 .25em}pre{padding:.7em;overflow:auto;max-height:32rem}
table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{text-align:left;vertical-align:top;border-bottom:1px solid #eee;padding:.3em .5em}
th{background:#fafafa}
.method{display:inline-block;min-width:3.6em;text-align:center;border-radius:3px;color:#fff;
font:bold 12px/1.8 ui-monospace,monospace;margin-right:.5em}
.get{background:#2f7d32}.post{background:#1565c0}
.lock{color:#8a5a00;font-size:.9em}
nav>ul{columns:2;padding-left:1.2em}nav li{break-inside:avoid}nav a{overflow-wrap:anywhere}
a{color:#0b57d0}
";

/// Escapes `text` for HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes `text` and turns `` `code` `` spans into `<code>`.
fn prose(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", escape(part));
        } else {
            out.push_str(&escape(part));
        }
    }
    out
}

/// Paragraphs of `text` (separated by blank lines).
fn paragraphs(text: &str) -> String {
    text.split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| format!("<p>{}</p>", prose(p)))
        .collect()
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// The anchor of a local `$ref` (`#/components/schemas/Order` → `schema-Order`).
fn ref_anchor(reference: &str) -> Option<String> {
    let rest = reference.strip_prefix("#/components/")?;
    let (kind, name) = rest.split_once('/')?;
    let prefix = match kind {
        "schemas" => "schema",
        "responses" => "response",
        "headers" => "header",
        _ => return None,
    };
    Some(format!("{prefix}-{name}"))
}

/// A link to the target of `reference`.
fn ref_link(reference: &str) -> String {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    match ref_anchor(reference) {
        Some(anchor) => format!("<a href=\"#{}\">{}</a>", escape(&anchor), escape(name)),
        None => escape(name),
    }
}

/// Follows `value`'s `$ref`, if it has one, within `doc`.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| doc.pointer(pointer))
            .unwrap_or(value),
        None => value,
    }
}

/// A one-line summary of a schema: a link for a `$ref`, the type and bounds otherwise.
fn schema_summary(schema: &Value) -> String {
    if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
        return ref_link(reference);
    }
    let mut parts = Vec::new();
    match schema.get("type") {
        Some(Value::String(t)) => parts.push(escape(t)),
        Some(Value::Array(ts)) => parts.push(escape(
            &ts.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
        )),
        _ => {}
    }
    if let Some(items) = schema.get("items") {
        parts.push(format!("of {}", schema_summary(items)));
    }
    for (key, label) in [
        ("format", "format"),
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("pattern", "matching"),
    ] {
        if let Some(value) = schema.get(key) {
            let text = match value {
                Value::String(s) => format!("<code>{}</code>", escape(s)),
                // The bound of every unsigned 64-bit number: readable as a power.
                other if other.as_u64() == Some(u64::MAX) => "2<sup>64</sup>−1".to_owned(),
                other => escape(&other.to_string()),
            };
            parts.push(format!("{label} {text}"));
        }
    }
    if let Some(Value::Array(values)) = schema.get("enum") {
        let values: Vec<String> = values.iter().map(|v| escape(&v.to_string())).collect();
        parts.push(format!("one of <code>{}</code>", values.join(", ")));
    }
    if let Some(value) = schema.get("const") {
        parts.push(format!("<code>{}</code>", escape(&value.to_string())));
    }
    if schema.get("type").is_none() {
        if let Some(Value::Object(properties)) = schema.get("properties") {
            let members: Vec<String> = properties
                .iter()
                .map(|(name, member)| {
                    format!("<code>{}</code>: {}", escape(name), schema_summary(member))
                })
                .collect();
            parts.push(format!("with {}", members.join(", ")));
        }
    }
    for (key, separator) in [("oneOf", " | "), ("anyOf", " | "), ("allOf", " &amp; ")] {
        if let Some(Value::Array(branches)) = schema.get(key) {
            let branches: Vec<String> = branches.iter().map(schema_summary).collect();
            let joined = branches.join(separator);
            parts.push(if key == "allOf" {
                format!("({joined})")
            } else {
                format!("{key}: {joined}")
            });
        }
    }
    if parts.is_empty() {
        "any".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `value` as indented JSON, its local `$ref`s made links.
fn json_block(value: &Value) -> String {
    let text = escape(&serde_json::to_string_pretty(value).unwrap_or_default());
    let quote = "&quot;";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("&quot;#/components/") {
        out.push_str(&rest[..start]);
        let after = &rest[start + quote.len()..];
        let Some(end) = after.find(quote) else {
            rest = &rest[start..];
            break;
        };
        let reference = &after[..end];
        match ref_anchor(reference) {
            Some(anchor) => {
                let _ = write!(out, "{quote}<a href=\"#{anchor}\">{reference}</a>{quote}");
            }
            None => {
                let _ = write!(out, "{quote}{reference}{quote}");
            }
        }
        rest = &after[end + quote.len()..];
    }
    out.push_str(rest);
    format!("<pre>{out}</pre>")
}

/// Renders the page of `doc`.
pub(super) fn render(doc: &Value) -> String {
    let mut page = String::with_capacity(256 * 1024);
    let info = &doc["info"];
    let title = str_of(info, "title");
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{} — API reference</title><style>{STYLE}</style></head><body>\
         <header><h1>{} <small>{} · OpenAPI {}</small></h1>{}\
         <p>The machine-readable description: <a href=\"/openapi.json\">/openapi.json</a>.</p>\
         </header>",
        escape(title),
        escape(title),
        escape(str_of(info, "version")),
        escape(str_of(doc, "openapi")),
        paragraphs(str_of(info, "description")),
    );
    let mut operations = operations(doc);
    // Within a tag: commands (POST) first, then reads, by path.
    operations.sort_by(|x, y| (x.method == "get", x.path).cmp(&(y.method == "get", y.path)));
    let tags: Vec<(&str, &str)> = doc["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .map(|t| (str_of(t, "name"), str_of(t, "description")))
                .collect()
        })
        .unwrap_or_default();
    page.push_str("<nav><h2>Contents</h2><ul>");
    for (tag, _) in &tags {
        let _ = write!(page, "<li><a href=\"#tag-{0}\">{0}</a><ul>", escape(tag));
        for op in operations.iter().filter(|op| op.tag == *tag) {
            let _ = write!(
                page,
                "<li><a href=\"#op-{}\">{} {}</a></li>",
                escape(&op.id),
                op.method.to_uppercase(),
                escape(op.path)
            );
        }
        page.push_str("</ul></li>");
    }
    page.push_str(
        "<li><a href=\"#problems\">Problem types</a></li>\
         <li><a href=\"#schemas\">Schemas</a></li></ul></nav><main>",
    );
    for (tag, description) in &tags {
        let _ = write!(
            page,
            "<section id=\"tag-{0}\"><h2>{0}</h2>{1}",
            escape(tag),
            paragraphs(description)
        );
        for op in operations.iter().filter(|op| op.tag == *tag) {
            render_operation(&mut page, doc, op);
        }
        page.push_str("</section>");
    }
    render_problems(&mut page, doc);
    render_schemas(&mut page, doc);
    page.push_str("</main></body></html>\n");
    page
}

/// One operation of the document.
struct Operation<'a> {
    method: &'a str,
    path: &'a str,
    id: String,
    tag: &'a str,
    value: &'a Value,
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut out = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return out;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object() else {
            continue;
        };
        for (method, value) in item {
            let tag = value["tags"]
                .get(0)
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.push(Operation {
                method,
                path,
                id: str_of(value, "operationId").to_owned(),
                tag,
                value,
            });
        }
    }
    out
}

fn render_operation(page: &mut String, doc: &Value, op: &Operation<'_>) {
    let value = op.value;
    let _ = write!(
        page,
        "<article id=\"op-{}\"><h3><span class=\"method {}\">{}</span><code>{}</code></h3>\
         <p><strong>{}</strong></p>{}",
        escape(&op.id),
        escape(op.method),
        escape(&op.method.to_uppercase()),
        escape(op.path),
        prose(str_of(value, "summary")),
        paragraphs(str_of(value, "description")),
    );
    if value["security"].as_array().is_some_and(|s| !s.is_empty()) {
        page.push_str(
            "<p class=\"lock\">Needs <code>Authorization: Bearer TOKEN</code> \
             (<a href=\"#auth\">authentication</a>).</p>",
        );
    }
    if let Some(parameters) = value["parameters"].as_array().filter(|p| !p.is_empty()) {
        page.push_str(
            "<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>schema</th>\
             <th>description</th></tr>",
        );
        for parameter in parameters {
            let parameter = resolve(doc, parameter);
            let required = if parameter["required"].as_bool() == Some(true) {
                " (required)"
            } else {
                ""
            };
            let _ = write!(
                page,
                "<tr><td><code>{}</code>{required}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(str_of(parameter, "name")),
                escape(str_of(parameter, "in")),
                schema_summary(&parameter["schema"]),
                prose(str_of(parameter, "description")),
            );
        }
        page.push_str("</table>");
    }
    if let Some(content) = value["requestBody"]["content"].as_object() {
        page.push_str("<h4>Request body</h4>");
        for (media_type, media) in content {
            let _ = write!(
                page,
                "<p><code>{}</code>: {}</p>",
                escape(media_type),
                schema_summary(&media["schema"])
            );
            if let Some(examples) = media["examples"].as_object() {
                for (name, example) in examples {
                    let _ = write!(page, "<p>Example <code>{}</code>:</p>", escape(name));
                    page.push_str(&json_block(&example["value"]));
                }
            }
        }
    }
    if let Some(responses) = value["responses"].as_object() {
        page.push_str(
            "<h4>Responses</h4><table><tr><th>status</th><th>description</th><th>body</th>\
             <th>headers</th></tr>",
        );
        for (status, response) in responses {
            let resolved = resolve(doc, response);
            let bodies: Vec<String> = resolved["content"]
                .as_object()
                .map(|content| {
                    content
                        .iter()
                        .map(|(media_type, media)| {
                            format!(
                                "<code>{}</code>: {}",
                                escape(media_type),
                                schema_summary(&media["schema"])
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let headers: Vec<String> = resolved["headers"]
                .as_object()
                .map(|headers| {
                    headers
                        .iter()
                        .filter(|(name, _)| *name != "X-Request-Id")
                        .map(|(name, _)| format!("<code>{}</code>", escape(name)))
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                page,
                "<tr><td><strong>{}</strong></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(status),
                prose(str_of(resolved, "description")),
                bodies.join("<br>"),
                headers.join(", "),
            );
        }
        page.push_str("</table>");
    }
    page.push_str("</article>");
}

fn render_problems(page: &mut String, doc: &Value) {
    let schemas = &doc["components"]["schemas"];
    page.push_str(
        "<section id=\"problems\"><h2>Problem types</h2><p>Every error is a problem detail \
         (RFC 9457, <code>application/problem+json</code>): <code>type</code> (a link to its \
         section below), <code>title</code>, <code>status</code>, <code>detail</code> (what \
         happened this time) and the extension members of its type. Every response carries an \
         <code>X-Request-Id</code> header, which the server's log lines carry too.</p>",
    );
    for kind in Kind::ALL {
        let id = anchor(kind);
        let schema = &schemas[id];
        let _ = write!(
            page,
            "<section class=\"problem\" id=\"{}\"><h3>{} <small>{}</small></h3>\
             <p><code>type</code>: <code>{}</code></p>{}",
            escape(id),
            escape(kind.title()),
            kind.status().as_u16(),
            escape(kind.type_uri()),
            paragraphs(str_of(schema, "description")),
        );
        let own = schema["allOf"].get(1);
        let required: Vec<&str> = own
            .and_then(|o| o["required"].as_array())
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let members: Vec<(&String, &Value)> = own
            .and_then(|o| o["properties"].as_object())
            .map(|p| {
                p.iter()
                    .filter(|(name, _)| !["type", "title", "status"].contains(&name.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if !members.is_empty() {
            page.push_str("<table><tr><th>member</th><th>schema</th><th>description</th></tr>");
            for (name, member) in members {
                let always = if required.contains(&name.as_str()) {
                    " (always)"
                } else {
                    ""
                };
                let _ = write!(
                    page,
                    "<tr><td><code>{}</code>{always}</td><td>{}</td><td>{}</td></tr>",
                    escape(name),
                    schema_summary(member),
                    prose(str_of(member, "description")),
                );
            }
            page.push_str("</table>");
        }
        page.push_str("</section>");
    }
    let _ = write!(
        page,
        "<section id=\"auth\"><h3>Authentication</h3>{}</section></section>",
        paragraphs(str_of(
            &doc["components"]["securitySchemes"]["bearerAuth"],
            "description"
        )),
    );
}

fn render_schemas(page: &mut String, doc: &Value) {
    page.push_str("<section id=\"schemas\"><h2>Schemas</h2>");
    let components = &doc["components"];
    for (section, prefix) in [
        ("schemas", "schema"),
        ("responses", "response"),
        ("headers", "header"),
    ] {
        let Some(entries) = components[section].as_object() else {
            continue;
        };
        for (name, value) in entries {
            let _ = write!(
                page,
                "<section class=\"schema\" id=\"{prefix}-{0}\">\
                 <h3>{0} <small>{section}</small></h3>{1}{2}</section>",
                escape(name),
                paragraphs(str_of(value, "description")),
                json_block(value),
            );
        }
    }
    page.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_escaped_and_code_spans_become_code() {
        assert_eq!(prose("a `<b>` & c"), "a <code>&lt;b&gt;</code> &amp; c");
    }

    #[test]
    fn local_references_become_links() {
        let block = json_block(&json!({"$ref": "#/components/schemas/Order"}));
        assert!(block.contains("<a href=\"#schema-Order\">#/components/schemas/Order</a>"));
        assert_eq!(
            schema_summary(&json!({"$ref": "#/components/schemas/Order"})),
            "<a href=\"#schema-Order\">Order</a>"
        );
    }
}
