//! The OpenAPI 3.1 document of the reply gate's HTTP interface and the admin API
//! (`coexist openapi`; docs/openapi.yaml is its output). The bodies the admin API answers are
//! described by the same types that write them (schemars), so the document cannot drift from
//! what is served; [`crate::services::console::api::ROUTES`] and
//! [`crate::services::gate::ROUTES`] list the routes, and a test holds the document, the lists
//! and the servers together.

use serde_json::{json, Map, Value};

use crate::tools::asyncapi::rehome;

/// A JSON Schema of `T`, its definitions gathered into `defs`, references pointing at
/// `#/components/schemas`.
fn schema_of<T: schemars::JsonSchema>(defs: &mut Map<String, Value>) -> Value {
    let mut generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.root_schema_for::<T>().to_value();
    let name = T::schema_name().into_owned();
    if let Value::Object(root) = &mut schema {
        root.remove("$schema");
        if let Some(Value::Object(more)) = root.remove("$defs") {
            for (k, mut v) in more {
                rehome(&mut v);
                defs.insert(k, v);
            }
        }
    }
    rehome(&mut schema);
    defs.insert(name.clone(), schema);
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_body(schema: Value, description: &str) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

/// The admin API's error answers.
fn errors(codes: &[&str]) -> Map<String, Value> {
    let error = json!({"$ref": "#/components/schemas/ApiError"});
    codes
        .iter()
        .map(|c| {
            let what = match *c {
                "400" => "the request is not valid: `error.message` names what is wrong",
                "401" => "no valid bearer token (COEXIST_API_TOKEN)",
                "404" => "no such number or conversation, or one the caller may not see",
                "422" => "onboarding refused: Meta says the number cannot be a coexistence number (the message says why); nothing was recorded",
                "502" => "Meta refused a call or did not answer: the steps before it stand; call again to resume",
                "503" => "Redis or RabbitMQ cannot be reached now; nothing was changed",
                _ => "an error",
            };
            ((*c).to_owned(), json_body(error.clone(), what))
        })
        .collect()
}

fn operation(summary: &str, ok: Value, errs: &[&str], extra: Value) -> Value {
    let mut responses = errors(errs);
    if let Value::Object(ok) = ok {
        responses.extend(ok);
    }
    let mut op = json!({"summary": summary, "security": [{"bearer": []}], "responses": responses});
    if let (Value::Object(o), Value::Object(x)) = (&mut op, extra) {
        o.extend(x);
    }
    op
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description, "schema": {"type": "string"}})
}

/// The document.
pub fn document() -> Value {
    use crate::tools::numbers::{Listed, Shown};
    use crate::tools::operator::{Paused, View};
    let mut defs = Map::new();
    let listed = schema_of::<Listed>(&mut defs);
    let shown = schema_of::<Shown>(&mut defs);
    let record = schema_of::<crate::core::numbers::Record>(&mut defs);
    let view = schema_of::<View>(&mut defs);
    let explained = schema_of::<crate::tools::explain::Explained>(&mut defs);
    let paused = schema_of::<Paused>(&mut defs);
    let setting = schema_of::<crate::tools::numbers::Setting>(&mut defs);
    let onboarded = schema_of::<crate::tools::onboard::Report>(&mut defs);
    let checked = schema_of::<crate::tools::check::Checked>(&mut defs);
    defs.insert(
        "ApiError".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}),
    );
    defs.insert(
        "MetaError".into(),
        json!({"type": "object", "required": ["error"], "description": "Meta's error shape: what the gate answers when it refuses or fails",
               "properties": {"error": {"type": "object", "required": ["message", "type", "code"], "properties": {
                   "message": {"type": "string"},
                   "type": {"type": "string", "description": "coexist_reply_refused, coexist_bad_request, coexist_unauthorized, coexist_state_unavailable, coexist_events_backlogged, coexist_graph_unreachable"},
                   "code": {"type": "integer"},
                   "error_data": {"type": "object", "properties": {
                       "reason": {"type": "string", "enum": ["conversation_held", "stale_reply", "outside_service_window", "number_offboarded", "number_disconnected"]},
                       "paused_until": {"type": ["string", "null"]}}}}}}}),
    );
    let id = path_param("id", "the business number's phone_number_id");
    let customer = path_param(
        "customer",
        "the customer: a phone number (digits) or a business-scoped user id",
    );
    let settings_patch = json!({"type": "object", "additionalProperties": false,
        "description": "A JSON merge patch (RFC 7396) of the number's runtime settings: a key with a value sets it, null unsets it (the file's or the global value applies again). Values as configuration writes them.",
        "properties": {
            "reset_text": {"type": ["string", "null"], "description": "the reset command; empty turns reset off"},
            "timeout": {"type": ["string", "null"], "description": "a duration, e.g. 7d"},
            "session_timeout": {"type": ["string", "null"]},
            "automated_texts": {"type": ["array", "string", "null"], "items": {"type": "string"}},
            "handback_messages": {"type": ["integer", "string", "null"]},
            "service_window": {"type": ["string", "null"]},
            "coexistence": {"type": ["boolean", "string", "null"], "description": "false: App messages are recorded and pause nothing"}}});
    let action_body = json!({"required": false, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"duration": {"type": "string", "description": "pause: how long (default the timeout); extend: how much longer (required), e.g. 2h"}}}}}});
    let acted = json!({"type": "object", "required": ["events", "state"], "properties": {
        "events": {"type": "array", "items": {"type": "object", "description": "an event as published (docs/events.schema.json)"}},
        "state": view.clone()}});
    let health = |what: &str| {
        json!({"get": {"summary": what, "servers": [{"url": "http://127.0.0.1:8081"}, {"url": "http://127.0.0.1:8082"}],
            "responses": {"200": {"description": "yes", "content": {"text/plain": {"schema": {"type": "string"}}}},
                          "503": {"description": "no: the body says why", "content": {"text/plain": {"schema": {"type": "string"}}}}}}})
    };
    let gate = json!([{"url": "http://127.0.0.1:8081", "description": "the reply gate (COEXIST_GATE_LISTEN)"}]);
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "coexist: the reply gate and the admin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The reply gate (docs/contract.md, \"Reply gate\"): the AI agent sends its WhatsApp messages through it instead of straight to Meta. The admin API (docs/contract.md, \"Admin API\"): numbers, their runtime settings and their conversations, for a platform's backend, served by the console process under /api/v1 when COEXIST_API_TOKEN is set.",
        },
        "servers": [{"url": "http://127.0.0.1:8082", "description": "the console process (COEXIST_CONSOLE_LISTEN)"}],
        "paths": {
            "/api/v1/numbers": {"get": operation("Every number the caller may see", json!({"200": json_body(json!({"type": "object", "required": ["numbers"], "properties": {"numbers": {"type": "array", "items": listed}}}), "the numbers")}), &["401", "503"], json!({}))},
            "/api/v1/numbers/{id}": {
                "parameters": [id.clone()],
                "get": operation("A number's record, effective settings (with where each comes from) and what to do about its state", json!({"200": json_body(shown, "the number")}), &["401", "404", "503"], json!({})),
                "put": operation("Adds the number (active), or names it again", json!({"200": json_body(record, "the record")}), &["400", "401", "404", "503"], json!({"requestBody": {"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {"waba_id": {"type": "string"}, "name": {"type": "string"}, "display_phone_number": {"type": "string"}}}}}}})),
                "delete": operation("Forgets the number's record and runtime settings (its conversations stay)", json!({"204": {"description": "removed"}}), &["401", "404", "503"], json!({})),
            },
            "/api/v1/numbers/{id}/settings": {
                "parameters": [id.clone()],
                "patch": operation("Changes the number's runtime settings: every worker and gate use them within 2 s; publishes number.updated", json!({"200": json_body(json!({"type": "object", "required": ["settings", "effective", "event"], "properties": {"settings": {"type": "object"}, "effective": {"type": "array", "items": setting}, "event": {"type": ["object", "null"], "description": "the number.updated published (null: nothing changed)"}}}), "the settings now")}), &["400", "401", "404", "503"], json!({"requestBody": {"required": true, "content": {"application/merge-patch+json": {"schema": settings_patch.clone()}, "application/json": {"schema": settings_patch}}}})),
            },
            "/api/v1/numbers/{id}/check": {
                "parameters": [id.clone()],
                "get": operation("The number's post-setup checklist from what coexist saw (as number check): each line passed, failed or not yet, with what to do", json!({"200": json_body(checked, "the checklist")}), &["401", "404", "503"], json!({})),
            },
            "/api/v1/numbers/{id}/onboard": {
                "parameters": [id.clone()],
                "post": operation("Onboards the number after Embedded Signup, or resumes its onboarding: Meta's check (is_on_biz_app, platform_type, country), subscribed_apps, then the contacts and history syncs, each asked once and recorded before it is asked (docs/contract.md, \"Onboarding\")", json!({"200": json_body(onboarded, "what this run did and where the onboarding stands (a sync refused past 24 h shows as a step refused)")}), &["400", "401", "404", "422", "502", "503"], json!({"requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "required": ["waba_id"], "properties": {
                    "waba_id": {"type": "string", "description": "the number's WhatsApp Business Account"},
                    "graph_token": {"type": "string", "description": "the business token (else COEXIST_GRAPH_TOKEN of the console process); used for the calls, never stored or logged"},
                    "again": {"type": "boolean", "default": false, "description": "the business signed up again: forget the earlier onboarding, a new 24 h window"}}}}}}})),
            },
            "/api/v1/conversations": {
                "get": operation("The conversations with a human now, soonest release first, a page at a time", json!({"200": json_body(json!({"type": "object", "required": ["conversations", "next"], "properties": {"conversations": {"type": "array", "items": paused}, "next": {"type": ["string", "null"], "description": "pass as `after` for the next page; null at the end"}}}), "a page")}), &["400", "401", "404", "503"], json!({"parameters": [
                    {"name": "number", "in": "query", "required": false, "schema": {"type": "string"}, "description": "only this number's"},
                    {"name": "after", "in": "query", "required": false, "schema": {"type": "string"}, "description": "the previous page's `next`"},
                    {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}}]})),
            },
            "/api/v1/conversations/{id}/{customer}": {
                "parameters": [id.clone(), customer.clone()],
                "get": operation("A conversation's state, its trail (each decision with why) and what happens on the customer's next message (as conversation explain)", json!({"200": json_body(explained, "the state and why")}), &["400", "401", "404", "503"], json!({})),
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token of COEXIST_API_TOKEN (name:token, or name@ID+ID:token for a caller limited to those numbers)"},
                "gateToken": {"type": "apiKey", "in": "header", "name": "X-Coexist-Gate-Token", "description": "COEXIST_GATE_TOKEN, when set"},
            },
        },
    });
    for (action, summary) in [
        ("pause", "Pauses the AI agent for the customer (R4 without a message), recorded with the token's name"),
        ("release", "Hands the customer back to the AI agent (reason: operator)"),
        ("extend", "Makes the pause in force last `duration` longer"),
    ] {
        doc["paths"][format!("/api/v1/conversations/{{id}}/{{customer}}/{action}")] = json!({
            "parameters": [id.clone(), customer.clone()],
            "post": operation(summary, json!({
                "200": json_body(acted.clone(), "decided: the events published and the state after"),
                "202": json_body(json!({"$ref": "#/components/schemas/ApiError"}), "queued in the conversation's partition, not decided within 30 s; it will be decided in order")}),
                &["400", "401", "404", "503"], json!({"requestBody": action_body.clone()})),
        });
    }
    doc["paths"]["/{version}/{phone_number_id}/messages"] = json!({
        "servers": gate.clone(),
        "parameters": [path_param("version", "a Graph API version, e.g. v23.0"), path_param("phone_number_id", "the business number")],
        "post": {
            "summary": "Sends a WhatsApp message as Meta's Cloud API takes it, unless a human holds the conversation",
            "security": [{}, {"gateToken": []}],
            "parameters": [{"name": "X-Coexist-Reply-Token", "in": "header", "required": false, "schema": {"type": "string"}, "description": "the reply_token of the message answered"}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "description": "the body exactly as Meta's Cloud API takes it"}}}},
            "responses": {
                "200": {"description": "forwarded: Meta's status and body as they are", "content": {"application/json": {"schema": {"type": "object"}}}},
                "400": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "not JSON, names no customer or two conversations, or a bad path: nothing forwarded"),
                "401": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "X-Coexist-Gate-Token missing or wrong"),
                "409": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "refused: conversation_held, stale_reply, outside_service_window or number_disconnected; nothing forwarded"),
                "502": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "Meta unreachable or silent within 10 s; nothing published"),
                "503": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "number_offboarded (Retry-After), state unreadable or events backlogged; nothing forwarded"),
            },
        },
    });
    doc["paths"]["/v1/conversations/{phone_number_id}/{customer}"] = json!({
        "servers": gate.clone(),
        "parameters": [path_param("phone_number_id", "the business number"), customer.clone()],
        "get": {
            "summary": "Who handles the customer now, for agents that send by themselves",
            "security": [{}, {"gateToken": []}],
            "responses": {
                "200": json_body(json!({"type": "object", "required": ["handler", "paused_until", "reply_token"], "properties": {
                    "handler": {"type": "string", "enum": ["bot", "human"]},
                    "paused_until": {"type": ["string", "null"]},
                    "reply_token": {"type": "string"}}}), "the conversation now"),
                "400": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "not a customer"),
                "401": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "X-Coexist-Gate-Token missing or wrong"),
                "503": json_body(json!({"$ref": "#/components/schemas/MetaError"}), "the state cannot be read now"),
            },
        },
    });
    doc["paths"]["/healthz"] = health("Alive");
    doc["paths"]["/readyz"] = health("Ready: the servers it needs reachable");
    doc["paths"]["/metrics"] = json!({"get": {"summary": "Prometheus metrics", "servers": [{"url": "http://127.0.0.1:8081"}, {"url": "http://127.0.0.1:8082"}],
        "responses": {"200": {"description": "the metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}}});
    doc["components"]["schemas"] = Value::Object(defs);
    doc
}

/// Every (method, path) the document describes.
pub fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                out.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    out.sort();
    out
}
