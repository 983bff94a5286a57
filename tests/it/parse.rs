//! Meta's webhook model: every field and type read, unknown ones tolerated, bad input a clear
//! error or a tolerated item, never a panic.

use coexist::core::engine::input::{Change, Direction, Echo, ItemKind};
use coexist::core::meta::{parse_body, BodyError};
use serde_json::json;

use crate::support::*;

fn fixture(name: &str) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks");
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_example_body_parses() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let parsed = parse_body(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!parsed.items.is_empty(), "{}", path.display());
        assert!(
            parsed.unreadable.is_empty(),
            "{}: {:?}",
            path.display(),
            parsed.unreadable
        );
        n += 1;
    }
    assert!(n >= 8, "the examples are there");
}

#[test]
fn customer_message_with_context_media_and_profile() {
    let body = customer_msg(
        ANA,
        "wamid.X1",
        1_764_000_000,
        "image",
        json!({"id": "M1", "mime_type": "image/jpeg", "sha256": "abc", "caption": "mira"}),
    );
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["entry"][0]["changes"][0]["value"]["messages"][0]["context"] =
        json!({"from": BUSINESS, "id": "wamid.PREV"});
    let items = parse_body(v.to_string().as_bytes()).unwrap().items;
    assert_eq!(items.len(), 1);
    let ItemKind::Customer { customer, message } = &items[0].kind else {
        panic!("{:?}", items[0].kind)
    };
    assert_eq!(customer.wa_id.as_deref(), Some(ANA));
    assert_eq!(customer.name.as_deref(), Some("Ana Ruiz"));
    assert_eq!(message.text, "mira");
    assert_eq!(message.reply_to.as_deref(), Some("wamid.PREV"));
    let media = message.media.as_ref().unwrap();
    assert_eq!(
        (media.id.as_deref(), media.mime_type.as_deref()),
        (Some("M1"), Some("image/jpeg"))
    );
    assert_eq!(items[0].key, "m:wamid.X1");
    assert_eq!(items[0].scope.to_string(), format!("{PNID}:{ANA}"));
}

#[test]
fn business_scoped_user_ids_identify_customers_without_a_number() {
    let body = envelope(
        "messages",
        json!({"metadata": metadata(),
        "contacts": [{"profile": {"name": "Zoe"}, "user_id": "US.13491208655302741918"}],
        "messages": [{"from_user_id": "US.13491208655302741918", "id": "wamid.U1", "timestamp": "1764000000", "type": "text", "text": {"body": "hi"}}]}),
    );
    let items = parse_body(body.as_bytes()).unwrap().items;
    let ItemKind::Customer { customer, .. } = &items[0].kind else {
        panic!()
    };
    assert_eq!(customer.wa_id, None);
    assert_eq!(customer.user_id.as_deref(), Some("US.13491208655302741918"));
    assert_eq!(customer.name.as_deref(), Some("Zoe"));
    assert_eq!(
        items[0].scope.to_string(),
        format!("{PNID}:US.13491208655302741918")
    );
    // An echo to a username-only customer carries to_user_id.
    let echo = envelope(
        "smb_message_echoes",
        json!({"metadata": metadata(), "message_echoes": [
        {"from": BUSINESS, "to_user_id": "US.13491208655302741918", "id": "wamid.U2", "timestamp": "1764000001", "type": "text", "text": {"body": "hola"}}]}),
    );
    let items = parse_body(echo.as_bytes()).unwrap().items;
    assert_eq!(
        items[0].scope.to_string(),
        format!("{PNID}:US.13491208655302741918"),
        "same conversation as the message"
    );
}

#[test]
fn echoes_of_every_kind() {
    let items = parse_body(fixture("echo-edit.json").as_bytes())
        .unwrap()
        .items;
    let ItemKind::Echo {
        echo:
            Echo::Change(Change::Edit {
                original_message_id,
                message,
            }),
        ..
    } = &items[0].kind
    else {
        panic!("{:?}", items[0].kind)
    };
    assert_eq!(original_message_id.as_deref(), Some("wamid.EX1"));
    assert_eq!(message.text, "Mañana a las 10, no a las 9");
    // The new content may also stand directly in the edit object.
    let flat = echo_msg(
        ANA,
        "wamid.E9",
        1,
        "edit",
        json!({"original_message_id": "wamid.E8", "text": {"body": "nuevo"}}),
    );
    let items = parse_body(flat.as_bytes()).unwrap().items;
    let ItemKind::Echo {
        echo: Echo::Change(Change::Edit { message, .. }),
        ..
    } = &items[0].kind
    else {
        panic!()
    };
    assert_eq!(message.text, "nuevo");
    let items = parse_body(fixture("echo-revoke.json").as_bytes())
        .unwrap()
        .items;
    assert!(
        matches!(&items[0].kind, ItemKind::Echo { echo: Echo::Change(Change::Revoke { original_message_id: Some(id) }), .. } if id == "wamid.EX1")
    );
}

#[test]
fn history_forms() {
    let items = parse_body(fixture("history-chunk.json").as_bytes())
        .unwrap()
        .items;
    let dirs: Vec<Direction> = items
        .iter()
        .filter_map(|i| match &i.kind {
            ItemKind::History { direction, .. } => Some(*direction),
            _ => None,
        })
        .collect();
    assert_eq!(dirs, vec![Direction::Outbound, Direction::Inbound]);
    assert!(matches!(
        items.last().unwrap().kind,
        ItemKind::HistoryStatus {
            phase: Some(0),
            chunk_order: Some(1),
            progress: Some(55),
            declined: false
        }
    ));
    let items = parse_body(fixture("history-declined.json").as_bytes())
        .unwrap()
        .items;
    assert!(matches!(
        items[0].kind,
        ItemKind::HistoryStatus { declined: true, .. }
    ));
}

#[test]
fn value_level_errors_and_unknown_fields_are_kept_as_items() {
    let body = envelope(
        "messages",
        json!({"metadata": metadata(), "errors": [{"code": 131000, "title": "Something went wrong"}]}),
    );
    let items = parse_body(body.as_bytes()).unwrap().items;
    assert!(
        matches!(&items[0].kind, ItemKind::Errors { errors } if errors.get().contains("131000"))
    );
    let body = envelope(
        "message_template_status_update",
        json!({"event": "APPROVED", "message_template_id": 1}),
    );
    let items = parse_body(body.as_bytes()).unwrap().items;
    assert!(
        matches!(&items[0].kind, ItemKind::Unhandled { field } if field == "message_template_status_update")
    );
}

#[test]
fn unknown_types_and_fields_are_data() {
    let body = customer_msg(
        ANA,
        "wamid.V1",
        1_764_000_000,
        "hologram",
        json!({"depth": 3}),
    );
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["entry"][0]["changes"][0]["value"]["messages"][0]["brand_new_field"] =
        json!({"nested": [1, 2, 3]});
    v["entry"][0]["brand_new_entry_field"] = json!(true);
    let items = parse_body(v.to_string().as_bytes()).unwrap().items;
    let ItemKind::Customer { message, .. } = &items[0].kind else {
        panic!()
    };
    assert_eq!(message.text, "[hologram message]");
    assert!(
        items[0].raw.get().contains("brand_new_field"),
        "raw keeps everything"
    );
}

#[test]
fn not_a_webhook_is_a_clear_error() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "not JSON"),
        (b"{", "not JSON"),
        (b"hello", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b"\"text\"", "not a JSON object"),
        (b"{}", "no `entry` array"),
        (br#"{"object":"page","entry":[]}"#, "\"page\""),
        (
            br#"{"object":"whatsapp_business_account","entry":{}}"#,
            "`entry` is not an array",
        ),
    ];
    for (body, want) in cases {
        let err = parse_body(body).unwrap_err();
        assert!(matches!(
            err,
            BodyError::NotJson(_) | BodyError::NotWebhook(_)
        ));
        assert!(
            err.to_string().contains(want),
            "{:?}: {err}",
            String::from_utf8_lossy(body)
        );
        assert!(!err.to_string().contains('\n'));
    }
}

#[test]
fn wrong_types_in_known_fields_are_tolerated() {
    let odd = [
        json!({"from": 5215551230001u64, "id": "wamid.W1", "timestamp": 1764000000, "type": "text", "text": {"body": "número"}}),
        json!({"from": ANA, "id": "wamid.W2", "timestamp": {"no": 1}, "type": "text", "text": "not an object"}),
        json!({"from": ANA, "id": ["x"], "timestamp": "soon", "type": 7, "location": [1, 2]}),
        json!({"from": ANA, "id": "wamid.W4", "timestamp": "1764000000", "type": "location", "location": {"latitude": "19.4", "longitude": null}}),
        json!({"from": ANA, "id": "wamid.W5", "timestamp": "1764000000", "type": "contacts", "contacts": {"not": "an array"}}),
    ];
    for m in odd {
        let body = envelope(
            "messages",
            json!({"metadata": metadata(), "messages": [m.clone()]}),
        );
        let items = parse_body(body.as_bytes())
            .unwrap_or_else(|e| panic!("{m}: {e}"))
            .items;
        assert_eq!(items.len(), 1, "{m}");
        assert!(
            matches!(items[0].kind, ItemKind::Customer { .. }),
            "{m}: {:?}",
            items[0].kind
        );
    }
    // Structures of the wrong shape become items kept with a reason, never dropped silently.
    let shapes = [
        envelope("messages", json!({"metadata": metadata(), "messages": {"not": "an array"}})),
        envelope("messages", json!({"metadata": metadata(), "messages": ["a string", 5]})),
        envelope("messages", json!({"metadata": metadata(), "messages": [{"id": "wamid.nobody"}]})),
        envelope("smb_message_echoes", json!({"metadata": metadata(), "message_echoes": [{"id": "wamid.noto", "type": "text"}]})),
        envelope("messages", json!({"metadata": {"phone_number_id": "a{b}c"}, "messages": [{"from": ANA, "id": "x"}]})),
        envelope("messages", json!("value is a string")),
        json!({"object": "whatsapp_business_account", "entry": [5, {"changes": "x"}, {"changes": [7]}]}).to_string(),
    ];
    for body in shapes {
        let parsed = parse_body(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert!(parsed.items.is_empty(), "{body}: {:?}", parsed.items);
        assert!(!parsed.unreadable.is_empty(), "{body}");
        for part in &parsed.unreadable {
            assert!(!part.reason.is_empty(), "{body}: a reason");
        }
    }
}

#[test]
fn huge_strings_and_deep_nesting_do_not_panic() {
    let big = "é".repeat(3 << 20);
    let items = parse_body(customer_text(ANA, "wamid.BIG", 1_764_000_000, &big).as_bytes())
        .unwrap()
        .items;
    let ItemKind::Customer { message, .. } = &items[0].kind else {
        panic!()
    };
    assert_eq!(message.text.len(), big.len());
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let body = format!(
        r#"{{"object":"whatsapp_business_account","entry":[{{"changes":[{{"field":"messages","value":{{"metadata":{{"phone_number_id":"1"}},"messages":[{{"from":"1","x":{deep}}}]}}}}]}}]}}"#
    );
    let _ = parse_body(body.as_bytes()); // an error or a tolerated item; never a panic or a stack overflow
    assert!(parse_body(deep.as_bytes()).is_err());
}

#[test]
fn a_thousand_items_in_one_body_all_count() {
    let msgs: Vec<_> = (0..1000)
        .map(|i| json!({"from": format!("52155500{i:05}"), "id": format!("wamid.N{i}"), "timestamp": "1764000000", "type": "text", "text": {"body": i.to_string()}}))
        .collect();
    let body = envelope(
        "messages",
        json!({"metadata": metadata(), "messages": msgs}),
    );
    let items = parse_body(body.as_bytes()).unwrap().items;
    assert_eq!(items.len(), 1000);
    assert_eq!(items[999].key, "m:wamid.N999");
}

/// Mutated bodies (bytes flipped, cut, duplicated) never panic the parser or the engine.
#[tokio::test]
async fn mutated_bodies_never_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/webhooks");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let engine = memory_engine(coexist::core::engine::Rules::default());
    let alphabet = b"{}[]\":,0123456789 abcnulltruefalse\\";
    let mut parsed = 0;
    for round in 0..4000 {
        let mut body = seeds[round % seeds.len()].clone();
        for _ in 0..(1 + next() % 4) {
            let at = (next() as usize) % body.len().max(1);
            match next() % 3 {
                0 => body[at] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    body.remove(at);
                }
                _ => body.insert(at, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        if let Ok(read) = parse_body(&body) {
            parsed += 1;
            for item in &read.items {
                let _ = engine
                    .apply(
                        &coexist::core::engine::Input::Item(item),
                        coexist::core::time::Millis::from_secs(1_764_000_000),
                    )
                    .await
                    .unwrap();
            }
        }
    }
    assert!(parsed > 100, "some mutants are still webhooks ({parsed})");
}

#[test]
fn customer_edits_and_revokes_are_changes_not_messages() {
    let edit = customer_msg(
        ANA,
        "wamid.CE1",
        1_764_000_000,
        "edit",
        json!({"original_message_id": "wamid.C0", "message": {"type": "image", "image": {"id": "m1", "caption": "la nueva"}}}),
    );
    let items = parse_body(edit.as_bytes()).unwrap().items;
    let ItemKind::CustomerChange {
        customer,
        change: Change::Edit {
            original_message_id,
            message,
        },
    } = &items[0].kind
    else {
        panic!("{:?}", items[0].kind)
    };
    assert_eq!(customer.wa_id.as_deref(), Some(ANA));
    assert_eq!(original_message_id.as_deref(), Some("wamid.C0"));
    assert_eq!(
        (message.kind.as_str(), message.text.as_str()),
        ("image", "la nueva")
    );
    assert_eq!(
        message.id.as_deref(),
        Some("wamid.CE1"),
        "the edit's own id"
    );
    assert_eq!(items[0].key, "m:wamid.CE1");
    let revoke = customer_msg(
        ANA,
        "wamid.CR1",
        1_764_000_000,
        "revoke",
        json!({"original_message_id": "wamid.C0"}),
    );
    let items = parse_body(revoke.as_bytes()).unwrap().items;
    assert!(matches!(
        &items[0].kind,
        ItemKind::CustomerChange { change: Change::Revoke { original_message_id: Some(id) }, .. } if id == "wamid.C0"
    ));
    // Missing pieces: still a change, with what is known.
    let bare = customer_msg(ANA, "wamid.CE2", 1_764_000_000, "edit", json!(null));
    let items = parse_body(bare.as_bytes()).unwrap().items;
    assert!(matches!(
        &items[0].kind,
        ItemKind::CustomerChange {
            change: Change::Edit {
                original_message_id: None,
                ..
            },
            ..
        }
    ));
}

/// How many items Meta's body holds: messages, statuses, value-level errors, echoes, history
/// chunks and their messages, contact changes, account updates, other fields' changes.
fn items_in(body: &serde_json::Value) -> usize {
    let len = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    let mut n = 0;
    for entry in body["entry"].as_array().unwrap() {
        for change in entry["changes"].as_array().unwrap() {
            let v = &change["value"];
            n += match change["field"].as_str().unwrap() {
                "messages" => {
                    len(&v["messages"]) + len(&v["statuses"]) + (len(&v["errors"]) > 0) as usize
                }
                "standby" => len(&v["messages"]) + len(&v["message_echoes"]) + len(&v["statuses"]),
                "messaging_handovers" => len(&v["messaging_handovers"]).max(1),
                "user_preferences" => len(&v["user_preferences"]),
                "smb_message_echoes" => len(&v["message_echoes"]),
                "history" => {
                    let chunks = v["history"].as_array().cloned().unwrap_or_default();
                    let threads: usize = chunks
                        .iter()
                        .flat_map(|c| c["threads"].as_array().cloned().unwrap_or_default())
                        .map(|t| len(&t["messages"]))
                        .sum();
                    chunks.len() + threads + len(&v["messages"]) + len(&v["message_echoes"])
                }
                "smb_app_state_sync" => len(&v["state_sync"]),
                _ => 1,
            };
        }
    }
    n
}

#[tokio::test]
async fn the_corpus_loses_nothing_and_never_names_the_business() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/meta-shapes.jsonl");
    let text = std::fs::read_to_string(path).unwrap();
    let engine = memory_engine(coexist::core::engine::Rules::default());
    let mut bodies = 0;
    let mut types = std::collections::HashSet::new();
    for (line, raw) in text.lines().enumerate() {
        let body: serde_json::Value = serde_json::from_str(raw).unwrap();
        let business = body["entry"][0]["changes"][0]["value"]["metadata"]["display_phone_number"]
            .as_str()
            .map(str::to_owned);
        let parsed =
            parse_body(raw.as_bytes()).unwrap_or_else(|e| panic!("line {}: {e}", line + 1));
        assert!(
            parsed.unreadable.is_empty(),
            "line {}: {:?}",
            line + 1,
            parsed.unreadable
        );
        assert_eq!(
            parsed.items.len(),
            items_in(&body),
            "line {}: every item, once",
            line + 1
        );
        for item in &parsed.items {
            assert!(
                item.timestamp.is_some() || item.kind.customer().is_none(),
                "line {}",
                line + 1
            );
        }
        let events = feed(&engine, raw, 1_764_200_000).await;
        for e in &events {
            types.insert(e.kind.clone());
            let named = e.body["customer"]["wa_id"].as_str();
            assert!(
                named.is_none() || named != business.as_deref(),
                "line {}: the business named as the customer: {}",
                line + 1,
                e.body
            );
            assert_ne!(
                e.body["occurred_at"],
                json!("1970-01-01T00:00:00Z"),
                "line {}",
                line + 1
            );
            if body["entry"][0]["changes"][0]["value"]["messages"][0]["type"] == "system" {
                assert_eq!(e.kind, "customer.changed", "line {}", line + 1);
            }
        }
        bodies += 1;
    }
    assert!(bodies >= 50, "{bodies} bodies");
    for t in [
        "message.received",
        "message.edited",
        "message.revoked",
        "session.paused",
        "message.status",
        "account.updated",
        "customer.changed",
        "message.sent_from_app",
        "conversation.handover",
        "conversation.released",
        "message.history",
        "history.status",
        "contact.synced",
        "message.observed",
        "customer.preferences",
        "meta.error",
    ] {
        assert!(types.contains(t), "the corpus yields {t}: {types:?}");
    }
}
