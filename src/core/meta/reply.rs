//! A message the business sends through the Cloud API (`POST /{version}/{phone_number_id}/messages`),
//! read for the reply gate: who it goes to, what kind it is, and its content rendered like any
//! message.

use serde_json::value::RawValue;

use super::items::content;
use super::{compact, lenient, wire};
use crate::core::domain::{phone_digits, CustomerKey};
use crate::core::engine::input::Content;

/// What the gate needs of a send.
#[derive(Debug)]
pub struct Send {
    /// The customer it goes to: `to` (a phone number), else `recipient` (a business-scoped id).
    pub customer: CustomerKey,
    /// A message (not a read receipt or a typing indicator, which carry `status`).
    pub message: bool,
    /// A template (which Meta delivers outside the customer service window too).
    pub template: bool,
    /// The message as events show it.
    pub content: Content,
    /// The body as sent (whitespace between tokens removed).
    pub raw: Box<RawValue>,
}

/// Reads a send's body; an error (one line) when it is not a JSON object or names no customer.
pub fn read(body: &[u8]) -> Result<Send, String> {
    let not_an_object = || "the body is not a JSON object".to_owned();
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not_an_object());
    }
    let raw: Box<RawValue> =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let m = serde_json::from_str::<lenient::Obj<wire::Message>>(raw.get())
        .ok()
        .and_then(|m| m.0)
        .ok_or_else(not_an_object)?;
    let customer =
        m.to.get()
            .and_then(phone_digits)
            .map(CustomerKey::WaId)
            .or_else(|| m.to.get().and_then(CustomerKey::parse))
            .or_else(|| m.recipient.get().and_then(CustomerKey::parse))
            .ok_or_else(|| "the body names no customer (`to` or `recipient`)".to_owned())?;
    let message = m.status.get().is_none();
    let mut content = content(&m);
    if content.reply_to.is_none() {
        content.reply_to = m.context.get().and_then(|c| c.message_id.0.clone());
    }
    if content.kind == "unknown" {
        // Meta takes a send without `type` as text.
        content.kind = "text".into();
        content.text = m
            .text
            .get()
            .and_then(|t| t.body.0.clone())
            .unwrap_or_default();
    }
    Ok(Send {
        customer,
        message,
        template: content.kind == "template",
        content,
        raw: compact(&raw),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_to_a_phone_number() {
        let s = read(br#"{"messaging_product":"whatsapp","to":"+52 1 555 123 0001","type":"text","text":{"body":"Hola"},"context":{"message_id":"wamid.IN"}}"#).unwrap();
        assert_eq!(s.customer, CustomerKey::WaId("5215551230001".into()));
        assert!(s.message && !s.template);
        assert_eq!(s.content.text, "Hola");
        assert_eq!(s.content.reply_to.as_deref(), Some("wamid.IN"));
    }

    #[test]
    fn a_template_to_a_business_scoped_id_and_a_read_receipt() {
        let s = read(br#"{"messaging_product":"whatsapp","recipient":"US.13491208655302741918","type":"template","template":{"name":"order_update","language":{"code":"en"}}}"#).unwrap();
        assert_eq!(
            s.customer,
            CustomerKey::UserId("US.13491208655302741918".into())
        );
        assert!(s.template && s.message);
        let r = read(br#"{"messaging_product":"whatsapp","status":"read","message_id":"wamid.X","to":"5215551230001"}"#).unwrap();
        assert!(!r.message);
        let i = read(r#"{"to":"5215551230001","type":"interactive","interactive":{"type":"button","body":{"text":"¿Confirmas?"},"action":{}}}"#.as_bytes()).unwrap();
        assert_eq!(i.content.text, "¿Confirmas?");
    }

    #[test]
    fn not_json_or_no_customer_is_an_error() {
        assert!(read(b"hello").is_err());
        assert!(read(b"[1]").is_err());
        assert!(read(br#"{"type":"text","text":{"body":"x"}}"#).is_err());
    }
}
