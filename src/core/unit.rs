//! The unit of inbound work: the items of one business number from one webhook, in order. The
//! ingress publishes one unit per number of a body to that number's partition; the worker
//! decides a number's items one after the other (a customer's names are resolved to their
//! conversation as each is decided, so items that name the customer differently stay in order). Items travel parsed (`raw` verbatim), so the worker runs
//! the rules on exactly what the ingress read.

use serde::{Deserialize, Serialize};

use crate::core::domain::Scope;
use crate::core::engine::input::Item;
use crate::core::time::Millis;

/// Version of the unit format.
pub const VERSION: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    pub v: u8,
    /// The business number (`{phone_number_id}:`).
    pub scope: Scope,
    /// When the ingress accepted the webhook (for the acceptance-to-events latency).
    pub accepted_at: Millis,
    pub items: Vec<Item>,
}

impl Unit {
    /// An id for the unit: the same items in the same conversation give the same id.
    pub fn id(&self) -> String {
        let keys: Vec<&str> = self.items.iter().map(|i| i.key.as_str()).collect();
        let scope = self.scope.to_string();
        let mut parts = vec![scope.as_str()];
        parts.extend(keys);
        crate::core::domain::stable_id(&parts)
    }
}

/// Splits a body's items into one unit per business number, keeping their order of appearance
/// within each. An item that has no time of its own (nor its entry's) takes `accepted_at`.
pub fn split(items: Vec<Item>, accepted_at: Millis) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    for mut item in items {
        item.timestamp = item.timestamp.or(Some(accepted_at));
        let number = &item.scope.phone_number_id;
        match units
            .iter_mut()
            .find(|u| &u.scope.phone_number_id == number)
        {
            Some(u) => u.items.push(item),
            None => units.push(Unit {
                v: VERSION,
                scope: Scope::number(number),
                accepted_at,
                items: vec![item],
            }),
        }
    }
    units
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::engine::input::{Change, Echo, ItemKind};

    #[test]
    fn units_written_by_the_earlier_build_are_read_and_written_the_same() {
        // An edit echo as the ingress of the previous build published it.
        let old = r#"{"v":1,"scope":"410:5215551230001","accepted_at":1764000000000,"items":[{"scope":"410:5215551230001","key":"m:wamid.ED","timestamp":1764000000000,"raw":{"id":"wamid.ED"},"kind":{"kind":"echo","customer":{"wa_id":"5215551230001","user_id":null,"name":null},"echo":{"action":"edit","original_message_id":"wamid.1","message":{"id":"wamid.ED","kind":"text","text":"corregido","media":null,"reply_to":null}}}},{"scope":"410:5215551230001","key":"m:wamid.S","timestamp":1764000000000,"raw":{"id":"wamid.S"},"kind":{"kind":"echo","customer":{"wa_id":"5215551230001","user_id":null,"name":null},"echo":{"action":"send","id":"wamid.S","kind":"text","text":"hola","media":null,"reply_to":null}}}]}"#;
        let unit: Unit = serde_json::from_str(old).unwrap();
        let ItemKind::Echo { echo, .. } = &unit.items[0].kind else {
            panic!("{:?}", unit.items[0].kind)
        };
        assert!(matches!(
            echo,
            Echo::Change(Change::Edit { original_message_id: Some(id), message }) if id == "wamid.1" && message.text == "corregido"
        ));
        let ItemKind::Echo { echo, .. } = &unit.items[1].kind else {
            panic!()
        };
        assert!(matches!(echo, Echo::Send(c) if c.text == "hola"));
        assert_eq!(serde_json::to_string(&unit).unwrap(), old);
    }
}
