//! The unit of inbound work: the items of one conversation from one webhook, in order. The
//! ingress publishes one unit per conversation of a body to that conversation's partition; the
//! worker decides its items in order. Items travel parsed (`raw` verbatim), so the worker runs
//! the rules on exactly what the ingress read.

use serde::{Deserialize, Serialize};

use crate::domain::Scope;
use crate::meta::Item;
use crate::time::Millis;

/// Version of the unit format.
pub const VERSION: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Unit {
    pub v: u8,
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
        crate::domain::stable_id(&parts)
    }
}

/// Splits a body's items into one unit per conversation, keeping their order of appearance
/// within each.
pub fn split(items: Vec<Item>, accepted_at: Millis) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    for item in items {
        match units.iter_mut().find(|u| u.scope == item.scope) {
            Some(u) => u.items.push(item),
            None => units.push(Unit {
                v: VERSION,
                scope: item.scope.clone(),
                accepted_at,
                items: vec![item],
            }),
        }
    }
    units
}
