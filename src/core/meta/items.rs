//! One change's value read into items: messages, echoes, statuses, history, contacts, account
//! updates and the rest, each with its conversation and dedup key.

use serde_json::value::RawValue;

use super::lenient::{self, RawList};
use super::*;

pub(super) struct Ctx<'v, 'a> {
    /// The change's value, as sent (kept with an item that cannot be read).
    pub(super) raw: &'v RawValue,
    pub(super) pnid: &'v str,
    pub(super) business: Option<String>,
    pub(super) value: &'v wire::Value<'a>,
}

impl Ctx<'_, '_> {
    pub(super) fn each<'r>(
        &self,
        list: &RawList<'r>,
        name: &str,
        out: &mut Parsed,
        mut f: impl FnMut(&Self, &'r RawValue, &mut Parsed),
    ) {
        match list {
            RawList::Absent => {}
            RawList::List(items) => items.iter().for_each(|r| f(self, r, out)),
            RawList::NotList => out.park(self.raw, format!("`{name}` is not an array")),
        }
    }

    /// Reads an item as `T`; one that is not an object is kept as unreadable, naming `what`.
    pub(super) fn read<'r, T: serde::Deserialize<'r>>(
        &self,
        raw: &'r RawValue,
        what: &str,
        out: &mut Parsed,
    ) -> Option<T> {
        let parsed = serde_json::from_str::<lenient::Obj<T>>(raw.get())
            .ok()
            .and_then(|o| o.0);
        if parsed.is_none() {
            out.park(raw, format!("{what} that is not an object"));
        }
        parsed
    }

    pub(super) fn customer_message(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(m) = self.read::<wire::Message>(raw, "a message", out) else {
            return;
        };
        let sender = Customer {
            wa_id: m.from.get().and_then(phone_digits),
            user_id: m.from_user_id.0.clone(),
            name: None,
        };
        let customer = self.not_the_business(self.with_contact(sender));
        // A group's message belongs to the group's conversation (R19), never the sender's.
        let key = match group(&m) {
            Some(group) => group,
            None => match customer.key() {
                Some(key) => key,
                None => return out.park(raw, "a customer message without a sender"),
            },
        };
        let kind = if m.kind.get() == Some("system") {
            system(&m, customer)
        } else {
            match change(&m) {
                Some(change) => ItemKind::CustomerChange { customer, change },
                None => ItemKind::Customer {
                    message: content(&m),
                    customer,
                },
            }
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: message_key(&m, raw),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind,
        });
    }

    pub(super) fn echo(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(m) = self.read::<wire::Message>(raw, "an echo", out) else {
            return;
        };
        let customer = self.not_the_business(Customer {
            wa_id: m.to.get().and_then(phone_digits),
            user_id: m.to_user_id.0.clone(),
            name: None,
        });
        let Some(key) = group(&m).or_else(|| customer.key()) else {
            return out.park(raw, "an echo without a recipient");
        };
        let echo = match change(&m) {
            Some(change) => Echo::Change(change),
            None => Echo::Send(content(&m)),
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: message_key(&m, raw),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Echo { customer, echo },
        });
    }

    /// R18: a message copied on `standby` (a customer's, or the owning responder's).
    pub(super) fn observed(&self, raw: &RawValue, from: ObservedFrom, out: &mut Parsed) {
        let Some(m) = self.read::<wire::Message>(raw, "a standby message", out) else {
            return;
        };
        let named = match from {
            ObservedFrom::Customer => Customer {
                wa_id: m.from.get().and_then(phone_digits),
                user_id: m.from_user_id.0.clone(),
                name: None,
            },
            ObservedFrom::OtherApp => Customer {
                wa_id: m.to.get().and_then(phone_digits),
                user_id: m.to_user_id.0.clone(),
                name: None,
            },
        };
        let customer = self.not_the_business(self.with_contact(named));
        let Some(key) = group(&m).or_else(|| customer.key()) else {
            return out.park(raw, "a standby message without a customer");
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            // Its own dedup key: the same wamid may reach us on `messages` once we own the thread.
            key: format!("sb:{}", message_key(&m, raw)),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Observed {
                customer,
                message: content(&m),
                from,
            },
        });
    }

    /// R18: a `messaging_handovers` notification; one that names no customer or no move is
    /// parked, never dropped.
    pub(super) fn handover(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(h) = self.read::<wire::Handover>(raw, "a messaging_handovers notification", out)
        else {
            return;
        };
        let sender = h.sender.get();
        let phone = sender
            .and_then(|s| s.phone_number.get().or(s.wa_id.get()))
            .or(h.from.get())
            .or(h.wa_id.get())
            .and_then(phone_digits);
        let user_id = sender
            .and_then(|s| s.user_id.0.clone())
            .or(h.user_id.0.clone());
        let customer = self.not_the_business(self.with_contact(Customer {
            wa_id: phone,
            user_id,
            name: None,
        }));
        let control = match h.kind.get() {
            Some("control_taken") => Some(Control::Taken),
            Some("control_passed") => Some(Control::Passed),
            _ => match (h.control_taken, h.control_passed) {
                (Some(_), None) => Some(Control::Taken),
                (None, Some(_)) => Some(Control::Passed),
                _ => None,
            },
        };
        let Some(control) = control else {
            return out.park(
                raw,
                "a messaging_handovers notification that says neither control_taken nor control_passed",
            );
        };
        let Some(key) = customer.key() else {
            return out.park(
                raw,
                "a messaging_handovers notification that names no customer",
            );
        };
        let object = match control {
            Control::Taken => h.control_taken,
            Control::Passed => h.control_passed,
        };
        let metadata = object
            .and_then(|o| serde_json::from_str::<lenient::Obj<wire::Control>>(o.get()).ok())
            .and_then(|o| o.0)
            .and_then(|c| c.metadata.0);
        let name = match control {
            Control::Taken => "taken",
            Control::Passed => "passed",
        };
        let item_key = match h.timestamp.0 {
            Some(t) => format!("ho:{name}:{}:{}", key.as_str(), t.0),
            None => format!("ho:{name}:{}", stable_id(&[raw.get()])),
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: item_key,
            timestamp: h.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Routing {
                customer,
                control,
                metadata,
            },
        });
    }

    /// A `user_preferences` entry: the customer stopped or resumed a kind of messages.
    pub(super) fn preference(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(p) = self.read::<wire::Preference>(raw, "a user_preferences entry", out) else {
            return;
        };
        let customer = self.not_the_business(self.with_contact(Customer {
            wa_id: p.wa_id.get().and_then(phone_digits),
            user_id: p.user_id.0.clone(),
            name: None,
        }));
        let Some(key) = customer.key() else {
            return out.park(raw, "a user_preferences entry that names no customer");
        };
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            key: format!("p:{}", stable_id(&[raw.get()])),
            timestamp: p.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Preferences {
                customer,
                category: p.category.0.clone(),
                value: p.value.0.clone(),
                detail: p.detail.0.clone(),
            },
        });
    }

    pub(super) fn status(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(s) = self.read::<wire::Status>(raw, "a status", out) else {
            return;
        };
        let customer = self.not_the_business(self.with_contact(Customer {
            wa_id: s.recipient_id.get().and_then(phone_digits),
            user_id: s.recipient_user_id.0.clone(),
            name: None,
        }));
        let scope = match customer.key() {
            Some(k) => Scope::conversation(self.pnid, k),
            None => Scope::number(self.pnid),
        };
        let key = match (s.id.get(), s.status.get()) {
            (Some(id), Some(st)) => format!("s:{id}:{st}"),
            _ => format!("s:{}", stable_id(&[raw.get()])),
        };
        let errors = match s.errors.filter(|e| e.get().trim_start().starts_with('[')) {
            Some(e) => compact(e),
            None => RawValue::from_string("[]".into()).expect("valid JSON"),
        };
        out.push(Item {
            scope,
            key,
            timestamp: s.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::Status {
                customer,
                message_id: s.id.0.clone(),
                status: s.status.0.clone(),
                errors,
            },
        });
    }

    pub(super) fn history_chunk(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(chunk) = self.read::<wire::HistoryChunk>(raw, "a history chunk", out) else {
            return;
        };
        for thread in chunk.threads.0.iter().filter_map(|t| t.get()) {
            // Who the thread is with: its id (a phone, or a user id) and its `context`.
            let id = thread.id.get().and_then(CustomerKey::parse);
            let context = thread.context.get();
            let with = Customer {
                wa_id: context
                    .and_then(|c| c.wa_id.get())
                    .and_then(phone_digits)
                    .or_else(|| match &id {
                        Some(CustomerKey::WaId(w)) => Some(w.clone()),
                        _ => None,
                    }),
                user_id: context
                    .and_then(|c| c.user_id.0.clone())
                    .or_else(|| match &id {
                        Some(CustomerKey::UserId(u)) => Some(u.clone()),
                        _ => None,
                    }),
                name: None,
            };
            match &thread.messages {
                RawList::Absent => {}
                RawList::List(msgs) => msgs
                    .iter()
                    .for_each(|m| self.history_message(m, &with, None, out)),
                RawList::NotList => out.park(raw, "`threads[].messages` is not an array"),
            }
        }
        let meta = chunk.metadata.get();
        let (phase, chunk_order, progress) = match meta {
            Some(m) => (m.phase.int(), m.chunk_order.int(), m.progress.int()),
            None => (None, None, None),
        };
        let declined = chunk
            .errors
            .0
            .iter()
            .filter_map(|e| e.get())
            .any(|e| e.code.int() == Some(HISTORY_DECLINED));
        let key = if meta.is_some() {
            format!("hs:{}:{}:{}", opt(phase), opt(chunk_order), opt(progress))
        } else {
            format!("hs:{}", stable_id(&[raw.get()]))
        };
        out.push(Item {
            scope: Scope::number(self.pnid),
            key,
            timestamp: None,
            raw: compact(raw),
            kind: ItemKind::HistoryStatus {
                phase,
                chunk_order,
                progress,
                declined,
            },
        });
    }

    /// One message of the history sync. `thread` names the customer when the thread does;
    /// `direction` is given by the form the message came in, else read from who sent it.
    pub(super) fn history_message(
        &self,
        raw: &RawValue,
        thread: &Customer,
        direction: Option<Direction>,
        out: &mut Parsed,
    ) {
        let Some(m) = self.read::<wire::Message>(raw, "a history message", out) else {
            return;
        };
        let sender = Customer {
            wa_id: m.from.get().and_then(phone_digits),
            user_id: m.from_user_id.0.clone(),
            name: None,
        };
        let recipient = Customer {
            wa_id: m.to.get().and_then(phone_digits),
            user_id: m.to_user_id.0.clone(),
            name: None,
        };
        let direction = direction.unwrap_or_else(|| self.direction(&sender, &recipient, thread));
        let customer = match direction {
            Direction::Inbound => sender,
            Direction::Outbound => recipient,
        };
        let customer = self.not_the_business(customer.or(thread));
        if customer.key().is_none() {
            return out.park(raw, "a history message without a customer");
        }
        let key = customer.key().expect("checked above");
        let message = content(&m);
        out.push(Item {
            scope: Scope::conversation(self.pnid, key),
            // A placeholder and the media that replaces it share a wamid: the type tells them apart.
            key: format!("h:{}:{}", message_key(&m, raw), message.kind),
            timestamp: m.timestamp.0,
            raw: compact(raw),
            kind: ItemKind::History {
                customer,
                message,
                direction,
            },
        });
    }

    /// A customer completed from the change's `contacts[]`: the contact that shares a name with
    /// them (or the only contact there is, when they have no name) gives its profile name and
    /// the names they lack.
    pub(super) fn with_contact(&self, customer: Customer) -> Customer {
        let contacts = &self.value.contacts.0;
        let matches = |c: &wire::Contact| {
            (customer.user_id.is_some() && c.user_id.get() == customer.user_id.as_deref())
                || same_phone(c.wa_id.get(), customer.wa_id.as_deref())
        };
        let contact = contacts.iter().filter_map(|c| c.get()).find(|c| matches(c));
        let of = |c: &wire::Contact| Customer {
            wa_id: c.wa_id.get().and_then(phone_digits),
            user_id: c.user_id.0.clone(),
            name: c.profile.get().and_then(|p| p.name.0.clone()),
        };
        match (contact, contacts.as_slice()) {
            (Some(c), _) => customer.or(&of(c)),
            // The only contact there is: its profile name (its ids only for a nameless sender).
            (None, [only]) => match only.get().map(of) {
                Some(c) if customer.wa_id.is_none() && customer.user_id.is_none() => c,
                Some(c) => Customer {
                    name: customer.name.or(c.name),
                    ..customer
                },
                None => customer,
            },
            (None, _) => customer,
        }
    }

    /// Whether a history message went out from the business or came in from the customer.
    pub(super) fn direction(
        &self,
        sender: &Customer,
        recipient: &Customer,
        thread: &Customer,
    ) -> Direction {
        let business = |c: &Customer| same_phone(c.wa_id.as_deref(), self.business.as_deref());
        let named = |c: &Customer| c.wa_id.is_some() || c.user_id.is_some();
        if business(sender) {
            Direction::Outbound
        } else if business(recipient) || (sender.wa_id.is_none() && sender.user_id.is_some()) {
            // Sent to the business, or by a customer named only by their user id.
            Direction::Inbound
        } else if !named(sender) {
            match named(recipient) {
                true => Direction::Outbound,
                false => Direction::Inbound,
            }
        } else if self.business.is_none() && named(recipient) && !sender.same_person(thread) {
            // The business's number is unknown: a message to someone, from other than the
            // thread's customer, is the business's.
            Direction::Outbound
        } else {
            Direction::Inbound
        }
    }

    /// The business's own number is never the customer: it is dropped from a customer's names.
    pub(super) fn not_the_business(&self, mut c: Customer) -> Customer {
        if same_phone(c.wa_id.as_deref(), self.business.as_deref()) {
            c.wa_id = None;
        }
        c
    }

    pub(super) fn state_sync(&self, raw: &RawValue, out: &mut Parsed) {
        let Some(s) = self.read::<wire::StateSync>(raw, "a state_sync item", out) else {
            return;
        };
        if s.kind.get().is_some_and(|k| k != "contact") {
            return out.push(Item {
                scope: Scope::number(self.pnid),
                key: format!("u:{}", stable_id(&[raw.get()])),
                timestamp: None,
                raw: compact(raw),
                kind: ItemKind::Unhandled {
                    field: format!("smb_app_state_sync:{}", s.kind.get().unwrap_or("")),
                },
            });
        }
        let contact = s
            .contact
            .and_then(|c| serde_json::from_str::<lenient::Obj<wire::SyncContact>>(c.get()).ok())
            .and_then(|c| c.0);
        let customer = Customer {
            wa_id: contact
                .as_ref()
                .and_then(|c| c.phone_number.get())
                .and_then(phone_digits),
            user_id: contact.as_ref().and_then(|c| c.user_id.0.clone()),
            name: contact
                .as_ref()
                .and_then(|c| c.full_name.0.clone().or(c.first_name.0.clone())),
        };
        let timestamp = s.metadata.get().and_then(|m| m.timestamp.0);
        let scope = match customer.key() {
            Some(k) => Scope::conversation(self.pnid, k),
            None => Scope::number(self.pnid),
        };
        out.push(Item {
            key: format!(
                "c:{}:{}:{}",
                customer.wa_id.as_deref().unwrap_or(""),
                s.action.get().unwrap_or(""),
                timestamp.map_or(0, |t| t.0)
            ),
            scope,
            timestamp,
            raw: compact(raw),
            kind: ItemKind::ContactSync {
                customer,
                action: s.action.0.clone(),
                contact: s.contact.map(compact),
            },
        });
    }
}

fn opt(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The group a message belongs to (R19): its conversation's key.
fn group(m: &wire::Message) -> Option<CustomerKey> {
    m.group_id.get().and_then(CustomerKey::group)
}

/// The dedup key of a message: its wamid, or a digest of its bytes when it has none.
fn message_key(m: &wire::Message, raw: &RawValue) -> String {
    match m.id.get().filter(|id| !id.is_empty()) {
        Some(id) => format!("m:{id}"),
        None => format!("m:{}", stable_id(&[raw.get()])),
    }
}

/// A `system` message: what changed, and the customer before and after. Older payloads say
/// `customer_changed_number` / `new_wa_id` and `customer_identity_changed`.
fn system(m: &wire::Message, sender: Customer) -> ItemKind {
    let sys = m.system.get();
    let field = |f: fn(&wire::System) -> &LStr| sys.and_then(|s| f(s).0.clone());
    let kind = sys.and_then(|s| s.kind.get()).unwrap_or("");
    let change = if kind.contains("number") {
        NameChange::Number
    } else if kind.contains("user_id") {
        NameChange::UserId
    } else {
        NameChange::Identity
    };
    let previous = Customer {
        wa_id: sender.wa_id.clone(),
        user_id: field(|s| &s.previous_user_id).or_else(|| sender.user_id.clone()),
        name: None,
    };
    let new_number = field(|s| &s.wa_id)
        .or_else(|| field(|s| &s.new_wa_id))
        .as_deref()
        .and_then(phone_digits);
    let customer = Customer {
        wa_id: match change {
            NameChange::Number => new_number.or(sender.wa_id),
            _ => sender.wa_id,
        },
        user_id: field(|s| &s.user_id).or(match change {
            // A new number comes with a new user id; without it, the old one is not theirs.
            NameChange::Number => None,
            _ => sender.user_id,
        }),
        name: sender.name,
    };
    ItemKind::System {
        customer,
        previous,
        change,
    }
}

/// The edit or deletion a message of type `edit` / `revoke` is (customer's or echo, one shape).
/// An edit's new content is its nested `message`, else the edit's own fields; it keeps the
/// edit's own id.
fn change(m: &wire::Message) -> Option<Change> {
    match m.kind.get()? {
        "revoke" => Some(Change::Revoke {
            original_message_id: m.revoke.get().and_then(|r| r.original_message_id.0.clone()),
        }),
        "edit" => {
            let edit = m.edit.get();
            let message = match edit.and_then(|e| e.message.get()) {
                Some(inner) => Content {
                    id: m.id.0.clone(),
                    ..content(inner)
                },
                None => Content {
                    id: m.id.0.clone(),
                    kind: "text".into(),
                    text: edit
                        .and_then(|e| e.text.get())
                        .and_then(|t| t.body.0.clone())
                        .unwrap_or_default(),
                    media: None,
                    reply_to: None,
                },
            };
            Some(Change::Edit {
                original_message_id: edit.and_then(|e| e.original_message_id.0.clone()),
                message,
            })
        }
        _ => None,
    }
}

pub(super) fn content(m: &wire::Message) -> Content {
    let media = render::media_of(m).map(|md| Media {
        id: md.id.0.clone(),
        mime_type: md.mime_type.0.clone(),
        caption: md.caption.0.clone(),
        filename: md.filename.0.clone(),
    });
    Content {
        id: m.id.0.clone(),
        kind: m.kind.0.clone().unwrap_or_else(|| "unknown".into()),
        text: render::text(m),
        media,
        reply_to: m.context.get().and_then(|c| c.id.0.clone()),
    }
}
