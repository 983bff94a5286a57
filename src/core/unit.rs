//! The unit of inbound work: the items of one business number from one webhook, in order. The
//! ingress publishes one unit per number of a body to that number's partition; the worker
//! decides a number's items one after the other (a customer's names are resolved to their
//! conversation as each is decided, so items that name the customer differently stay in order). Items travel parsed (`raw` verbatim), so the worker runs
//! the rules on exactly what the ingress read.

use serde::{Deserialize, Serialize};

use crate::core::domain::Scope;
use crate::core::engine::input::Item;
use crate::core::engine::{Deadline, Input, OperatorAction};
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

/// A command for one conversation, decided in its partition's lane like the items around it, so
/// the events of every source reach consumers in the order they were decided: an operator's
/// pause, release or extension, or a pause deadline that came due (docs/contract.md, "Order").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub v: u8,
    /// The conversation: its business number and one of the customer's names.
    pub scope: Scope,
    /// When it was sent to the partition.
    pub accepted_at: Millis,
    /// What to do.
    pub order: Order,
}

/// What a [`Command`] asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "order", rename_all = "snake_case")]
pub enum Order {
    /// An operator's pause (for `for_ms`, default the timeout), release, or extension of the
    /// pause in force by `for_ms`. `id` is the command's own (its dedup key: the same command
    /// delivered again is decided once), `by` the operator's name.
    Operator {
        id: String,
        action: OperatorAction,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
    },
    /// The pause begun by `trigger` came due (R7).
    Timeout { trigger: String },
}

impl Command {
    /// An operator's command, with a fresh id.
    pub fn operator(
        scope: Scope,
        action: OperatorAction,
        duration: Option<std::time::Duration>,
        by: Option<String>,
        accepted_at: Millis,
    ) -> Self {
        Command {
            v: VERSION,
            scope,
            accepted_at,
            order: Order::Operator {
                id: uuid::Uuid::new_v4().simple().to_string(),
                action,
                for_ms: duration.map(|d| d.as_millis().min(u64::MAX as u128) as u64),
                by,
            },
        }
    }

    /// A due deadline's release.
    pub fn timeout(deadline: &Deadline, accepted_at: Millis) -> Self {
        Command {
            v: VERSION,
            scope: deadline.scope.clone(),
            accepted_at,
            order: Order::Timeout {
                trigger: deadline.trigger.clone(),
            },
        }
    }

    /// The rules' input, decided at `now`.
    pub fn input(&self, now: Millis) -> Input<'static> {
        match &self.order {
            Order::Operator {
                id,
                action,
                for_ms,
                by,
            } => Input::Operator {
                scope: self.scope.clone(),
                id: id.clone(),
                action: *action,
                at: now,
                duration: for_ms.map(std::time::Duration::from_millis),
                by: by.clone(),
            },
            Order::Timeout { trigger } => Input::Timeout(Deadline {
                scope: self.scope.clone(),
                trigger: trigger.clone(),
            }),
        }
    }

    /// The message id it travels under: the same command, the same id.
    pub fn id(&self) -> String {
        let order = match &self.order {
            Order::Operator { id, .. } => format!("op:{id}"),
            Order::Timeout { trigger } => format!("release:{trigger}"),
        };
        crate::core::domain::stable_id(&[&self.scope.to_string(), &order])
    }
}

/// What a worker answers a command's sender: the events the command published, or why it could
/// not be decided (it was dead-lettered).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub events: Vec<crate::core::engine::event::Outbound>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
