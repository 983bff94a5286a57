//! `message.text`: one rendering of every message type, used by every event (docs/contract.md,
//! "Events").

use super::wire;

/// The text of a message as events show it.
pub fn text(m: &wire::Message) -> String {
    let kind = m.kind.get().unwrap_or("");
    match kind {
        "text" => m
            .text
            .get()
            .and_then(|t| t.body.0.clone())
            .unwrap_or_default(),
        "location" => location(m.location.get()),
        "contacts" => contacts(&m.contacts.0),
        "image" | "video" | "audio" | "document" | "sticker" => media(kind, media_of(m)),
        "interactive" => m
            .interactive
            .get()
            .map(interactive)
            .unwrap_or_else(|| other(kind)),
        "order" => match m.order.get() {
            Some(o) => match o.text.get().map(str::trim).filter(|t| !t.is_empty()) {
                Some(text) => text.to_owned(),
                None => format!("[order: {} items]", o.product_items.0.len()),
            },
            None => other(kind),
        },
        "unsupported" => match m.unsupported.get().and_then(|u| u.kind.get()) {
            Some(real) if !real.is_empty() => format!("[unsupported message: {real}]"),
            _ => "[unsupported message]".to_owned(),
        },
        "button" => m
            .button
            .get()
            .and_then(|b| b.text.0.clone().or(b.payload.0.clone()))
            .unwrap_or_else(|| other(kind)),
        "reaction" => match m
            .reaction
            .get()
            .and_then(|r| r.emoji.get())
            .filter(|e| !e.is_empty())
        {
            Some(emoji) => format!("Reacted {emoji}"),
            None => "Removed reaction".to_owned(),
        },
        _ => other(kind),
    }
}

/// An interactive message: the choice made (a button or list reply), the text shown (one the
/// business sends), else a short line naming what the customer did.
fn interactive(i: &wire::Interactive) -> String {
    let chosen = i.button_reply.get().or(i.list_reply.get());
    if let Some(title) = chosen.and_then(|r| r.title.get()).filter(|t| !t.is_empty()) {
        return title.to_owned();
    }
    if let Some(text) = i
        .body
        .get()
        .and_then(|b| b.text.get())
        .filter(|t| !t.is_empty())
    {
        return text.to_owned();
    }
    let kind = i.kind.get().unwrap_or("");
    if i.nfm_reply.get().is_some() || kind == "nfm_reply" {
        return "Completed a form".to_owned();
    }
    if let Some(reply) = i.call_permission_reply.get() {
        return match reply.response.get() {
            Some("accept") => "Allowed calls".to_owned(),
            Some("reject") => "Declined calls".to_owned(),
            _ => "Answered a call permission request".to_owned(),
        };
    }
    match kind {
        "payment_method" => "Chose a payment method".to_owned(),
        "call_permission_reply" => "Answered a call permission request".to_owned(),
        "" => "Replied to an interactive message".to_owned(),
        other => format!("Replied to an interactive message ({other})"),
    }
}

/// The media object of an image, video, audio, document or sticker message.
pub fn media_of(m: &wire::Message) -> Option<&wire::Media> {
    match m.kind.get()? {
        "image" => m.image.get(),
        "video" => m.video.get(),
        "audio" => m.audio.get(),
        "document" => m.document.get(),
        "sticker" => m.sticker.get(),
        _ => None,
    }
}

fn other(kind: &str) -> String {
    if kind.is_empty() {
        "[unknown message]".to_owned()
    } else {
        format!("[{kind} message]")
    }
}

fn location(l: Option<&wire::Location>) -> String {
    let Some(l) = l else {
        return "Shared location".to_owned();
    };
    let non_empty = |s: &super::lenient::LStr| {
        s.get()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if let Some(place) = non_empty(&l.name).or_else(|| non_empty(&l.address)) {
        return format!("Shared location: {place}");
    }
    match (l.latitude.0, l.longitude.0) {
        (Some(lat), Some(lon)) => format!("Shared location: {lat},{lon}"),
        _ => "Shared location".to_owned(),
    }
}

fn contacts(cards: &[super::lenient::Obj<wire::ContactCard>]) -> String {
    let names: Vec<&str> = cards
        .iter()
        .filter_map(|c| c.get()?.name.get()?.formatted_name.get())
        .filter(|n| !n.trim().is_empty())
        .collect();
    if names.is_empty() {
        "Shared contact".to_owned()
    } else {
        format!("Shared contact: {}", names.join(", "))
    }
}

fn media(kind: &str, m: Option<&wire::Media>) -> String {
    if let Some(caption) = m
        .and_then(|m| m.caption.get())
        .filter(|c| !c.trim().is_empty())
    {
        return caption.to_owned();
    }
    match (
        kind,
        m.and_then(|m| m.filename.get()).filter(|f| !f.is_empty()),
    ) {
        ("document", Some(name)) => format!("[document: {name}]"),
        _ => format!("[{kind}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(json: &str) -> String {
        text(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn text_is_the_body() {
        assert_eq!(
            render(r#"{"type":"text","text":{"body":"Hola 👋"}}"#),
            "Hola 👋"
        );
        assert_eq!(render(r#"{"type":"text"}"#), "");
    }

    #[test]
    fn location_prefers_name_then_address_then_coordinates() {
        assert_eq!(
            render(
                r#"{"type":"location","location":{"latitude":1.5,"longitude":-2,"name":"Casa","address":"Calle 5"}}"#
            ),
            "Shared location: Casa"
        );
        assert_eq!(
            render(
                r#"{"type":"location","location":{"latitude":1.5,"longitude":-2,"address":"Calle 5"}}"#
            ),
            "Shared location: Calle 5"
        );
        assert_eq!(
            render(r#"{"type":"location","location":{"latitude":19.4326,"longitude":-99.1332}}"#),
            "Shared location: 19.4326,-99.1332"
        );
        assert_eq!(
            render(r#"{"type":"location","location":{"name":""}}"#),
            "Shared location"
        );
    }

    #[test]
    fn contacts_join_formatted_names() {
        assert_eq!(
            render(r#"{"type":"contacts","contacts":[{"name":{"formatted_name":"Luis Pérez"}}]}"#),
            "Shared contact: Luis Pérez"
        );
        assert_eq!(
            render(
                r#"{"type":"contacts","contacts":[{"name":{"formatted_name":"A"}},{"name":{"formatted_name":"B"}}]}"#
            ),
            "Shared contact: A, B"
        );
        assert_eq!(
            render(r#"{"type":"contacts","contacts":[]}"#),
            "Shared contact"
        );
    }

    #[test]
    fn media_is_the_caption_or_a_placeholder() {
        assert_eq!(
            render(r#"{"type":"image","image":{"id":"1","caption":"mira"}}"#),
            "mira"
        );
        assert_eq!(render(r#"{"type":"image","image":{"id":"1"}}"#), "[image]");
        assert_eq!(render(r#"{"type":"video","video":{"id":"1"}}"#), "[video]");
        assert_eq!(render(r#"{"type":"audio","audio":{"id":"1"}}"#), "[audio]");
        assert_eq!(
            render(r#"{"type":"sticker","sticker":{"id":"1"}}"#),
            "[sticker]"
        );
        assert_eq!(
            render(r#"{"type":"document","document":{"filename":"factura.pdf"}}"#),
            "[document: factura.pdf]"
        );
        assert_eq!(
            render(r#"{"type":"document","document":{"caption":"la factura","filename":"f.pdf"}}"#),
            "la factura"
        );
        assert_eq!(render(r#"{"type":"document","document":{}}"#), "[document]");
    }

    #[test]
    fn interactive_and_button_are_the_choice() {
        assert_eq!(
            render(
                r#"{"type":"interactive","interactive":{"type":"button_reply","button_reply":{"id":"b1","title":"Sí"}}}"#
            ),
            "Sí"
        );
        assert_eq!(
            render(
                r#"{"type":"interactive","interactive":{"type":"list_reply","list_reply":{"id":"l1","title":"Envío"}}}"#
            ),
            "Envío"
        );
        assert_eq!(
            render(
                r#"{"type":"interactive","interactive":{"type":"nfm_reply","nfm_reply":{"name":"flow","body":"Sent","response_json":"{}"}}}"#
            ),
            "Completed a form"
        );
        assert_eq!(
            render(
                r#"{"type":"interactive","interactive":{"type":"payment_method","payment_method":{"payment_method":"card"}}}"#
            ),
            "Chose a payment method"
        );
        assert_eq!(
            render(
                r#"{"type":"interactive","interactive":{"type":"call_permission_reply","call_permission_reply":{"response":"accept"}}}"#
            ),
            "Allowed calls"
        );
        assert_eq!(
            render(r#"{"type":"button","button":{"text":"Confirmar","payload":"OK"}}"#),
            "Confirmar"
        );
        assert_eq!(
            render(r#"{"type":"interactive","interactive":{}}"#),
            "Replied to an interactive message"
        );
    }

    #[test]
    fn reactions() {
        assert_eq!(
            render(r#"{"type":"reaction","reaction":{"message_id":"w","emoji":"❤️"}}"#),
            "Reacted ❤️"
        );
        assert_eq!(
            render(r#"{"type":"reaction","reaction":{"message_id":"w","emoji":""}}"#),
            "Removed reaction"
        );
        assert_eq!(
            render(r#"{"type":"reaction","reaction":{"message_id":"w"}}"#),
            "Removed reaction"
        );
    }

    #[test]
    fn anything_else_names_its_type() {
        assert_eq!(render(r#"{"type":"order","order":{}}"#), "[order: 0 items]");
        assert_eq!(
            render(
                r#"{"type":"order","order":{"catalog_id":"1","text":"Love these!","product_items":[{"product_retailer_id":"a"}]}}"#
            ),
            "Love these!"
        );
        assert_eq!(
            render(r#"{"type":"order","order":{"product_items":[{},{}]}}"#),
            "[order: 2 items]"
        );
        assert_eq!(
            render(r#"{"type":"unsupported","errors":[{"code":131051}]}"#),
            "[unsupported message]"
        );
        assert_eq!(
            render(r#"{"type":"unsupported","unsupported":{"type":"poll"}}"#),
            "[unsupported message: poll]"
        );
        assert_eq!(
            render(r#"{"type":"request_welcome"}"#),
            "[request_welcome message]"
        );
        assert_eq!(render(r#"{"type":"hologram"}"#), "[hologram message]");
        assert_eq!(render(r#"{}"#), "[unknown message]");
    }
}
