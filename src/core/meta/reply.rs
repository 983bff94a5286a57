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
    /// Every name the send's recipient fields give, as Meta reads them: a group's key for
    /// `"recipient_type": "group"` (`to` is the group id), else `to` as a phone number (or
    /// an id), then `recipient` (a business-scoped id). Distinct, at least one; the first is the
    /// one it is judged as ([`Send::customer`]).
    pub names: Vec<CustomerKey>,
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
    let names = recipients(&m)?;
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
        names,
        message,
        template: content.kind == "template",
        content,
        raw: compact(&raw),
    })
}

impl Send {
    /// The name it is judged as: the first of [`Send::names`].
    pub fn customer(&self) -> &CustomerKey {
        &self.names[0]
    }

    /// Judges it as `name` (one of its names, the one whose conversation the gate chose).
    pub fn judge_as(&mut self, name: CustomerKey) {
        self.names.retain(|n| *n != name);
        self.names.insert(0, name);
    }
}

/// The names a send's recipient fields give (see [`Send::names`]); an error when they give none
/// or `recipient_type` is not one Meta knows.
fn recipients(m: &wire::Message) -> Result<Vec<CustomerKey>, String> {
    let to = m.to.get().map(str::trim).filter(|t| !t.is_empty());
    let mut names = Vec::new();
    match m.recipient_type.get().map(str::trim) {
        Some("group") => {
            let group = to.and_then(CustomerKey::group).ok_or_else(|| {
                "`recipient_type` is `group` but `to` is not a group id".to_owned()
            })?;
            names.push(group);
        }
        kind @ (None | Some("individual")) => {
            if let Some(to) = to {
                match phone_digits(to) {
                    Some(digits) => names.push(CustomerKey::phone(&digits)),
                    None => {
                        names.extend(CustomerKey::parse(to));
                        // Without a type, a group id in `to` is judged as the group too.
                        if kind.is_none() {
                            names.extend(CustomerKey::group(to));
                        }
                    }
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "`recipient_type` is {other:?}: Meta knows `individual` and `group`"
            ))
        }
    }
    names.extend(m.recipient.get().and_then(CustomerKey::parse));
    let mut distinct: Vec<CustomerKey> = Vec::with_capacity(names.len());
    for n in names {
        if !distinct.contains(&n) {
            distinct.push(n);
        }
    }
    if distinct.is_empty() {
        return Err("the body names no customer (`to` or `recipient`)".to_owned());
    }
    Ok(distinct)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_to_a_phone_number() {
        let s = read(br#"{"messaging_product":"whatsapp","to":"+52 1 555 123 0001","type":"text","text":{"body":"Hola"},"context":{"message_id":"wamid.IN"}}"#).unwrap();
        assert_eq!(*s.customer(), CustomerKey::WaId("5215551230001".into()));
        assert!(s.message && !s.template);
        assert_eq!(s.content.text, "Hola");
        assert_eq!(s.content.reply_to.as_deref(), Some("wamid.IN"));
    }

    #[test]
    fn a_template_to_a_business_scoped_id_and_a_read_receipt() {
        let s = read(br#"{"messaging_product":"whatsapp","recipient":"US.13491208655302741918","type":"template","template":{"name":"order_update","language":{"code":"en"}}}"#).unwrap();
        assert_eq!(
            *s.customer(),
            CustomerKey::UserId("US.13491208655302741918".into())
        );
        assert!(s.template && s.message);
        let r = read(br#"{"messaging_product":"whatsapp","status":"read","message_id":"wamid.X","to":"5215551230001"}"#).unwrap();
        assert!(!r.message);
        let i = read(r#"{"to":"5215551230001","type":"interactive","interactive":{"type":"button","body":{"text":"¿Confirmas?"},"action":{}}}"#.as_bytes()).unwrap();
        assert_eq!(i.content.text, "¿Confirmas?");
    }

    #[test]
    fn a_group_send_names_the_group_and_every_recipient_field_is_read() {
        let g = read(br#"{"messaging_product":"whatsapp","recipient_type":"group","to":"Y2FwaV9ncm91cDox","type":"text","text":{"body":"hi all"}}"#).unwrap();
        assert_eq!(g.names, [CustomerKey::group("Y2FwaV9ncm91cDox").unwrap()]);
        // Without a type, an id in `to` that is no phone number is judged as a group too.
        let untyped =
            read(br#"{"to":"Y2FwaV9ncm91cDox","type":"text","text":{"body":"x"}}"#).unwrap();
        assert!(untyped
            .names
            .contains(&CustomerKey::group("Y2FwaV9ncm91cDox").unwrap()));
        // `to` and `recipient` both named: both are judged.
        let both = read(
            br#"{"to":"5215551230001","recipient":"US.99","type":"text","text":{"body":"x"}}"#,
        )
        .unwrap();
        assert_eq!(
            both.names,
            [
                CustomerKey::WaId("5215551230001".into()),
                CustomerKey::UserId("US.99".into())
            ]
        );
        // The Mexican number as the business writes it is Meta's wa_id.
        let mx = read(br#"{"to":"+52 55 5123 0001","type":"text","text":{"body":"x"}}"#).unwrap();
        assert_eq!(mx.names, [CustomerKey::WaId("5215551230001".into())]);
        assert!(read(
            br#"{"recipient_type":"group","to":"a b","type":"text","text":{"body":"x"}}"#
        )
        .is_err());
        assert!(read(
            br#"{"recipient_type":"broadcast","to":"1","type":"text","text":{"body":"x"}}"#
        )
        .is_err());
    }

    #[test]
    fn not_json_or_no_customer_is_an_error() {
        assert!(read(b"hello").is_err());
        assert!(read(b"[1]").is_err());
        assert!(read(br#"{"type":"text","text":{"body":"x"}}"#).is_err());
    }
}
