//! `coexist asyncapi`: the AsyncAPI 3.0 document of what coexist publishes and consumes: the two
//! event exchanges and their default queues, every event type (payload schemas from the same
//! types as `coexist schema`), the inbound partitions and the dead letters, with AMQP 0-9-1
//! bindings (0.3.0). What the binding cannot say (an exchange-to-queue binding, quorum and
//! dead-letter arguments) is in `x-coexist-*` extensions. `docs/asyncapi.yaml` is its output.

use serde_json::{json, Map, Value};

use crate::adapters::broker::DELIVERY_LIMIT;
use crate::core::engine::event::{schema, Payload};

const BINDING: &str = "0.3.0";

/// A component name for an event type: `message.received` -> `messageReceived`.
fn component(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        match c {
            '.' | '_' => upper = true,
            c if upper => {
                out.extend(c.to_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// Which exchange each event type is published to (`customer.changed` and
/// `number.state_changed` to both).
fn exchanges_of(name: &str) -> &'static [&'static str] {
    match name {
        "message.received"
        | "message.edited"
        | "message.revoked"
        | "customer.changed"
        | "number.state_changed" => &["bot", "human_chat"],
        "session.paused"
        | "message.status"
        | "account.updated"
        | "customer.preferences"
        | "meta.error" => &["bot"],
        _ => &["human_chat"],
    }
}

/// Rewrites JSON Schema references to `#/$defs/X` as AsyncAPI's `#/components/schemas/X`.
pub(crate) fn rehome(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref") {
                if let Some(name) = r.strip_prefix("#/$defs/") {
                    *r = format!("#/components/schemas/{name}");
                }
            }
            map.values_mut().for_each(rehome);
        }
        Value::Array(items) => items.iter_mut().for_each(rehome),
        _ => {}
    }
}

fn exchange_channel(exchange: &str, messages: &[&str], description: &str) -> Value {
    let refs: Map<String, Value> = messages
        .iter()
        .map(|m| {
            let c = component(m);
            (
                c.clone(),
                json!({"$ref": format!("#/components/messages/{c}")}),
            )
        })
        .collect();
    json!({
        "address": format!("{{ns}}.{exchange}"),
        "title": format!("{{ns}}.{exchange}"),
        "description": description,
        "parameters": {"ns": {"$ref": "#/components/parameters/ns"}},
        "messages": refs,
        "bindings": {"amqp": {
            "is": "routingKey",
            "exchange": {"name": format!("{{ns}}.{exchange}"), "type": "topic", "durable": true, "autoDelete": false, "vhost": "/"},
            "bindingVersion": BINDING,
        }},
    })
}

fn queue_channel(address: &str, description: &str, extensions: Value) -> Value {
    let mut channel = json!({
        "address": address,
        "description": description,
        "parameters": {"ns": {"$ref": "#/components/parameters/ns"}},
        "bindings": {"amqp": {
            "is": "queue",
            "queue": {"name": address, "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/"},
            "bindingVersion": BINDING,
        }},
    });
    if let (Value::Object(c), Value::Object(x)) = (&mut channel, extensions) {
        c.extend(x);
    }
    channel
}

/// The document.
pub fn document() -> Value {
    let mut events = schema();
    let mut schemas: Map<String, Value> = match events["$defs"].take() {
        Value::Object(defs) => defs,
        _ => Map::new(),
    };
    let mut messages = Map::new();
    for branch in events["oneOf"].as_array_mut().into_iter().flatten() {
        let name = branch["title"].as_str().unwrap_or_default().to_owned();
        let c = component(&name);
        let mut payload = branch.take();
        rehome(&mut payload);
        schemas.insert(format!("{c}Event"), payload);
        messages.insert(c.clone(), json!({
            "name": name,
            "title": name,
            "summary": format!("`{name}`, on {}.", exchanges_of(&name).iter().map(|e| format!("{{ns}}.{e}")).collect::<Vec<_>>().join(" and ")),
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/EventHeaders"},
            "payload": {"$ref": format!("#/components/schemas/{c}Event")},
            "correlationId": {"description": "The conversation the event belongs to.", "location": "$message.header#/conversation"},
            "bindings": {"amqp": {"messageType": name, "bindingVersion": BINDING}},
        }));
    }
    for v in schemas.values_mut() {
        rehome(v);
    }
    schemas.insert("EventHeaders".into(), json!({
        "type": "object",
        "description": "AMQP headers of every event (its message_id is the event_id, its type the event type, content_type application/json, delivery mode 2).",
        "properties": {
            "conversation": {"type": "string", "description": "`{phone_number_id}:{conversation id}` (`{phone_number_id}:` for events of no customer; `{phone_number_id}:group:{group_id}` for a group's)."},
            "traceparent": {"type": "string", "description": "W3C trace context of the webhook the event came from."},
            "tracestate": {"type": "string", "description": "W3C trace state, when the trace has one."},
        },
        "required": ["conversation"],
    }));
    schemas.insert("Unit".into(), json!({
        "type": "object",
        "description": "Inbound work: one business number's items of one webhook, in order (coexist's own wire form between ingress and workers).",
        "properties": {
            "v": {"type": "integer", "const": crate::core::unit::VERSION},
            "scope": {"type": "string", "description": "`{phone_number_id}:`"},
            "accepted_at": {"type": "integer", "description": "When the ingress accepted the webhook, Unix ms."},
            "items": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["v", "scope", "accepted_at", "items"],
    }));
    messages.insert(
        "unit".into(),
        json!({
            "name": "coexist.unit",
            "title": "inbound unit",
            "contentType": "application/json",
            "payload": {"$ref": "#/components/schemas/Unit"},
            "bindings": {"amqp": {"messageType": "coexist.unit", "bindingVersion": BINDING}},
        }),
    );
    messages.insert("deadLetter".into(), json!({
        "name": "dead letter",
        "title": "dead letter",
        "summary": "Input that could not be read or kept failing, as it came (AMQP type coexist.unit, meta.webhook or meta.item), with headers naming why.",
        "headers": {"type": "object", "properties": {
            "x-coexist-reason": {"type": "string"},
            "x-coexist-stage": {"type": "string", "enum": ["ingress", "worker", "replay"]},
            "x-coexist-attempts": {"type": "integer"},
        }},
        "payload": {"description": "The bytes as they came (a unit, a webhook body or an item)."},
    }));
    let names: Vec<&str> = Payload::NAMES.to_vec();
    let on = |exchange: &str| -> Vec<&str> {
        names
            .iter()
            .copied()
            .filter(|n| exchanges_of(n).contains(&exchange))
            .collect()
    };
    let bot = on("bot");
    let human = on("human_chat");
    let refs = |list: &[&str], channel: &str| -> Vec<Value> {
        list.iter()
            .map(|m| json!({"$ref": format!("#/channels/{channel}/messages/{}", component(m))}))
            .collect()
    };
    let default_queue = |exchange: &str| {
        queue_channel(
            &format!("{{ns}}.{exchange}.events"),
            &format!("The default queue of {{ns}}.{exchange}: every event of it is kept until a consumer takes it (consumers may bind queues of their own instead)."),
            json!({"x-coexist-binding": {"exchange": format!("{{ns}}.{exchange}"), "routingKey": "#"}, "x-coexist-arguments": {"x-queue-type": "quorum"}}),
        )
    };
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "coexist",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "What coexist publishes to RabbitMQ and consumes from it. Events for the AI agent go to {ns}.bot, events for the human inbox to {ns}.human_chat (topic exchanges, routing key = the event's type). The contract in prose is docs/contract.md; every event's schema is docs/events.schema.json.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "rabbitmq": {
                "host": "127.0.0.1:5672",
                "protocol": "amqp",
                "protocolVersion": "0.9.1",
                "description": "COEXIST_AMQP_URL (several comma-separated URLs: the nodes of one cluster).",
            }
        },
        "channels": {
            "bot": exchange_channel("bot", &bot, "Events for the AI agent."),
            "humanChat": exchange_channel("human_chat", &human, "Events for the human inbox."),
            "botEvents": default_queue("bot"),
            "humanChatEvents": default_queue("human_chat"),
            "inbound": {
                "address": "{ns}.inbound.{partition}",
                "description": "The inbound partitions: the ingress publishes each business number's units to exchange {ns}.inbound (direct) with the number's slot as routing key (FNV-1a of phone_number_id modulo 1024), and the partition layout in force binds slot s to partition s modulo its count; workers consume them. A change of the count (coexist partitions set) moves the slots to the next epoch's queues and ends each old queue with a seal (type coexist.seal).",
                "parameters": {
                    "ns": {"$ref": "#/components/parameters/ns"},
                    "partition": {"description": "0 .. N-1 of the layout in force (epoch 0, N = COEXIST_PARTITIONS at the namespace's start); e{E}.0 .. e{E}.N-1 after the E-th change of the count"},
                },
                "messages": {"unit": {"$ref": "#/components/messages/unit"}},
                "bindings": {"amqp": {
                    "is": "queue",
                    "queue": {"name": "{ns}.inbound.{partition}", "durable": true, "exclusive": false, "autoDelete": false, "vhost": "/"},
                    "bindingVersion": BINDING,
                }},
                "x-coexist-binding": {"exchange": "{ns}.inbound", "type": "direct", "routingKey": "{slot}, every slot s with s modulo N = partition"},
                "x-coexist-arguments": {
                    "x-queue-type": "quorum",
                    "x-single-active-consumer": true,
                    "x-delivery-limit": DELIVERY_LIMIT,
                    "x-dead-letter-exchange": "{ns}.dead",
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                    "x-queue-leader-locator": "balanced",
                },
            },
            "dead": {
                "address": "{ns}.dead",
                "description": "Dead letters (a fanout exchange and a quorum queue of the same name): input that could not be read or kept failing. `coexist dlq list|replay`, the console.",
                "parameters": {"ns": {"$ref": "#/components/parameters/ns"}},
                "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
                "bindings": {"amqp": {
                    "is": "routingKey",
                    "exchange": {"name": "{ns}.dead", "type": "fanout", "durable": true, "autoDelete": false, "vhost": "/"},
                    "bindingVersion": BINDING,
                }},
                "x-coexist-arguments": {"x-queue-type": "quorum"},
            },
        },
        "operations": {
            "publishBotEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/bot"},
                "summary": "Workers publish the AI agent's events (persistent, mandatory, with confirms).",
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": true, "bindingVersion": BINDING}},
                "messages": refs(&bot, "bot"),
            },
            "publishHumanChatEvents": {
                "action": "send",
                "channel": {"$ref": "#/channels/humanChat"},
                "summary": "Workers (and the reply gate, for reply.suppressed and message.sent_by_bot) publish the human inbox's events.",
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": true, "bindingVersion": BINDING}},
                "messages": refs(&human, "humanChat"),
            },
            "publishUnits": {
                "action": "send",
                "channel": {"$ref": "#/channels/inbound"},
                "summary": "The ingress publishes each webhook's units; 200 to Meta once confirmed.",
                "bindings": {"amqp": {"deliveryMode": 2, "mandatory": true, "bindingVersion": BINDING}},
                "messages": [{"$ref": "#/channels/inbound/messages/unit"}],
            },
            "consumeUnits": {
                "action": "receive",
                "channel": {"$ref": "#/channels/inbound"},
                "summary": "Workers consume their share of the partitions, one active consumer per partition.",
                "messages": [{"$ref": "#/channels/inbound/messages/unit"}],
            },
            "deadLetter": {
                "action": "send",
                "channel": {"$ref": "#/channels/dead"},
                "summary": "Input that cannot be read, or keeps failing, is parked with the reason.",
                "messages": [{"$ref": "#/channels/dead/messages/deadLetter"}],
            },
        },
        "components": {
            "parameters": {"ns": {"description": "COEXIST_NAMESPACE", "default": "coexist"}},
            "messages": messages,
            "schemas": schemas,
        },
    })
}

/// A YAML rendering of a JSON value (every string quoted as JSON quotes it, which YAML reads the
/// same): what `coexist asyncapi` prints.
pub fn yaml(v: &Value) -> String {
    let mut out = String::new();
    write(v, 0, &mut out);
    out
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) if m.is_empty() => Some("{}".into()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(_) | Value::Array(_) => None,
        other => Some(other.to_string()),
    }
}

fn write(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                let key = serde_json::to_string(k).expect("a key");
                match scalar(child) {
                    Some(s) => out.push_str(&format!("{pad}{key}: {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        write(child, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}-\n"));
                        write(item, indent + 2, out);
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_has_a_message_and_the_checked_in_document_is_current() {
        let doc = document();
        for name in Payload::NAMES {
            let c = component(name);
            assert_eq!(
                doc["components"]["messages"][&c]["name"],
                json!(name),
                "{name}"
            );
            for exchange in exchanges_of(name) {
                let channel = if *exchange == "bot" {
                    "bot"
                } else {
                    "humanChat"
                };
                assert!(
                    doc["channels"][channel]["messages"][&c].is_object(),
                    "{name} on {exchange}"
                );
            }
        }
        assert_eq!(component("message.sent_by_bot"), "messageSentByBot");
        let text = yaml(&doc);
        let checked_in = include_str!("../../docs/asyncapi.yaml");
        assert_eq!(
            checked_in, text,
            "docs/asyncapi.yaml is stale: run `coexist asyncapi > docs/asyncapi.yaml`"
        );
    }
}
