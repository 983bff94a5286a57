//! Domain values: who the customer is, which conversation an item belongs to, and ids.
//!
//! A conversation is one business number (`phone_number_id`) and one customer. The customer is
//! known by `wa_id` (digits only) or, when Meta withholds the phone number, by the
//! business-scoped user id (BSUID, e.g. `US.13491208655302741918`).

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How a customer is identified within one business number: one of their names. Written as
/// the digits or the id itself (and read back by [`CustomerKey::parse`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum CustomerKey {
    /// A phone number in digits only.
    WaId(String),
    /// A business-scoped user id.
    UserId(String),
    /// A WhatsApp group (R19), written `group:{group_id}`: its conversation is the group's, never
    /// a member's.
    Group(String),
}

/// How a group's key begins.
const GROUP_PREFIX: &str = "group:";

impl CustomerKey {
    /// A customer from a phone number as Meta or an operator writes it (`+52 1 555...`), or from
    /// a business-scoped user id. Returns `None` when nothing usable is left.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        if let Some(id) = s.strip_prefix(GROUP_PREFIX) {
            return Self::group(id);
        }
        // Digits with phone punctuation (dots included) are a phone number; a business-scoped
        // id begins with its country's letters (`US.`), so the two never meet.
        if let Some(digits) = phone_digits(s) {
            return Some(CustomerKey::WaId(digits));
        }
        // A BSUID: beginning with a letter or digit (`US.…`), printable, no whitespace, no
        // characters that would break a key or a header.
        if s.len() <= 200
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Some(CustomerKey::UserId(s.to_owned()));
        }
        None
    }

    /// From Meta's fields: `wa_id`-like number first, the user id when the number is withheld.
    pub fn from_parts(number: Option<&str>, user_id: Option<&str>) -> Option<Self> {
        number
            .and_then(phone_digits)
            .map(CustomerKey::WaId)
            .or_else(|| {
                user_id
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .and_then(CustomerKey::parse)
            })
    }

    /// A group's key from Meta's `group_id`: printable, no whitespace, nothing that would break
    /// a key or a header.
    pub fn group(group_id: &str) -> Option<Self> {
        let id = group_id.trim();
        let ok = (1..=200).contains(&id.len())
            && id.chars().all(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '=' | '+' | '/' | '@')
            });
        ok.then(|| CustomerKey::Group(format!("{GROUP_PREFIX}{id}")))
    }

    /// Meta's `group_id` of a group's key.
    pub fn group_id(&self) -> Option<&str> {
        match self {
            CustomerKey::Group(k) => k.strip_prefix(GROUP_PREFIX),
            _ => None,
        }
    }

    /// The identifier as it appears in keys and headers.
    pub fn as_str(&self) -> &str {
        match self {
            CustomerKey::WaId(s) | CustomerKey::UserId(s) | CustomerKey::Group(s) => s,
        }
    }
}

impl From<CustomerKey> for String {
    fn from(k: CustomerKey) -> String {
        k.as_str().to_owned()
    }
}

impl TryFrom<String> for CustomerKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        CustomerKey::parse(&s).ok_or_else(|| format!("not a customer: {s:?}"))
    }
}

impl fmt::Display for CustomerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Digits of a phone number written with `+`, spaces, dashes, dots or parentheses; `None` when
/// anything else is in it or no digit is.
pub fn phone_digits(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    for c in s.trim().chars() {
        match c {
            '0'..='9' => out.push(c),
            '+' | ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
            _ => return None,
        }
    }
    (!out.is_empty() && out.len() <= 32).then_some(out)
}

/// The customer as events show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Customer {
    /// The phone number, digits only (null when Meta withholds it).
    pub wa_id: Option<String>,
    /// The business-scoped user id (BSUID), e.g. `US.13491208655302741918`.
    pub user_id: Option<String>,
    /// The WhatsApp profile name.
    pub name: Option<String>,
}

impl Customer {
    /// The key this customer's conversation is stored under.
    pub fn key(&self) -> Option<CustomerKey> {
        CustomerKey::from_parts(self.wa_id.as_deref(), self.user_id.as_deref())
    }

    /// Every name of this customer: the phone number first, then the business-scoped id.
    pub fn names(&self) -> Vec<CustomerKey> {
        let phone = self
            .wa_id
            .as_deref()
            .and_then(phone_digits)
            .map(CustomerKey::WaId);
        let user = self
            .user_id
            .as_deref()
            .and_then(CustomerKey::parse)
            .filter(|k| matches!(k, CustomerKey::UserId(_)));
        phone.into_iter().chain(user).collect()
    }

    /// The customer named by names alone: the first phone number and the first user id.
    pub fn from_names(names: &[CustomerKey]) -> Self {
        let find = |phone: bool| {
            names.iter().find_map(|k| match (k, phone) {
                (CustomerKey::WaId(w), true) | (CustomerKey::UserId(w), false) => Some(w.clone()),
                _ => None,
            })
        };
        Customer {
            wa_id: find(true),
            user_id: find(false),
            name: None,
        }
    }

    /// Whether two customers share a name (a phone number or a user id).
    pub fn same_person(&self, other: &Customer) -> bool {
        (self.wa_id.is_some() && self.wa_id == other.wa_id)
            || (self.user_id.is_some() && self.user_id == other.user_id)
    }

    /// This customer, completed from `other` when `other` is the same person (or when this one
    /// has no name at all): missing names and profile name are taken from it.
    pub fn or(self, other: &Customer) -> Customer {
        let nameless = self.wa_id.is_none() && self.user_id.is_none();
        if !nameless && !self.same_person(other) {
            return self;
        }
        Customer {
            wa_id: self.wa_id.or_else(|| other.wa_id.clone()),
            user_id: self.user_id.or_else(|| other.user_id.clone()),
            name: self.name.or_else(|| other.name.clone()),
        }
    }

    /// The customer named by a key alone (no profile name).
    pub fn from_key(key: &CustomerKey) -> Self {
        match key {
            CustomerKey::WaId(w) => Customer {
                wa_id: Some(w.clone()),
                ..Default::default()
            },
            CustomerKey::UserId(u) => Customer {
                user_id: Some(u.clone()),
                ..Default::default()
            },
            CustomerKey::Group(_) => Customer::default(),
        }
    }
}

/// Where an item's state and dedup marks live: a conversation, or a whole business number for
/// items that belong to no customer (history progress, account updates).
///
/// Written `{phone_number_id}:{customer}` (the customer empty for number-level items); this is
/// also the `conversation` header of published events and the Redis hash tag.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Scope {
    pub phone_number_id: String,
    pub customer: Option<CustomerKey>,
}

impl Scope {
    pub fn conversation(phone_number_id: &str, customer: CustomerKey) -> Self {
        Scope {
            phone_number_id: phone_number_id.to_owned(),
            customer: Some(customer),
        }
    }

    pub fn number(phone_number_id: &str) -> Self {
        Scope {
            phone_number_id: phone_number_id.to_owned(),
            customer: None,
        }
    }

    /// Parses the `{phone_number_id}:{customer}` form back.
    pub fn parse(s: &str) -> Option<Self> {
        let (pnid, cust) = s.split_once(':')?;
        if pnid.is_empty() {
            return None;
        }
        if cust.is_empty() {
            return Some(Scope::number(pnid));
        }
        Some(Scope::conversation(pnid, CustomerKey::parse(cust)?))
    }
}

impl Scope {
    /// The number and the customer reduced to its last four characters (empty for none).
    pub fn redacted_parts(&self) -> (&str, String) {
        let tail = self
            .customer
            .as_ref()
            .map(|c| format!("…{}", last_chars(c.as_str(), 4)));
        (&self.phone_number_id, tail.unwrap_or_default())
    }

    /// The scope for logs: the customer reduced to its last four characters.
    pub fn redacted(&self) -> String {
        let (pnid, customer) = self.redacted_parts();
        format!("{pnid}:{customer}")
    }
}

/// `s` for logs: every run of five or more digits (a phone number, say) cut to its last four.
pub fn redact_digits(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 5 {
            out.push('…');
            out.push_str(&run[run.len() - 4..]);
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in s.chars() {
        if c.is_ascii_digit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.to_string()
    }
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Scope::parse(&s).ok_or_else(|| format!("not a conversation: {s:?}"))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.customer {
            Some(c) => write!(f, "{}:{}", self.phone_number_id, c),
            None => write!(f, "{}:", self.phone_number_id),
        }
    }
}

/// A deterministic id: the same parts always give the same UUID (version 8, from SHA-256).
pub fn stable_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Uuid::new_v8(bytes).hyphenated().to_string()
}

/// FNV-1a (64 bit): a small, stable hash for spreading conversations over partitions and
/// partitions over workers. Stable across processes and versions (never change it: it decides
/// where conversations go).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Whether a string can be a business number's `phone_number_id` (Meta's are digits; anything
/// that would break a key, a hash tag or a header is refused).
pub fn valid_phone_number_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The last `n` characters of `s` (all of it when shorter).
pub fn last_chars(s: &str, n: usize) -> &str {
    if n == 0 {
        return "";
    }
    let start = s.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i);
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_phone_number_is_read_one_way_whatever_its_punctuation_dots_included() {
        let ana = Some(CustomerKey::WaId("5215551230001".into()));
        for written in [
            "5215551230001",
            "+52 1 555 123 0001",
            "52.1.555.123.0001",
            "+52-1-(555)-123.0001",
        ] {
            assert_eq!(CustomerKey::parse(written), ana, "{written}");
            assert_eq!(
                CustomerKey::from_parts(Some(written), None),
                ana,
                "{written}"
            );
        }
        // Business-scoped ids keep their dots: they begin with their country's letters.
        assert_eq!(
            CustomerKey::parse("US.13491208655302741918"),
            Some(CustomerKey::UserId("US.13491208655302741918".into()))
        );
        assert_eq!(
            CustomerKey::parse("..."),
            None,
            "no digit, no letter: nobody"
        );
    }

    #[test]
    fn last_chars_counts_characters_not_bytes() {
        assert_eq!(last_chars("5215551230001", 4), "0001");
        assert_eq!(last_chars("añoñ€x", 3), "ñ€x");
        assert_eq!(last_chars("ab", 4), "ab");
        assert_eq!(last_chars("abc", 0), "");
    }

    #[test]
    fn customer_keys_normalise_phone_numbers() {
        assert_eq!(
            CustomerKey::parse("+52 1 555 123 0001"),
            Some(CustomerKey::WaId("5215551230001".into()))
        );
        assert_eq!(
            CustomerKey::parse("(555) 123-0001"),
            Some(CustomerKey::WaId("5551230001".into()))
        );
        assert_eq!(
            CustomerKey::parse("US.13491208655302741918"),
            Some(CustomerKey::UserId("US.13491208655302741918".into()))
        );
        assert_eq!(CustomerKey::parse("   "), None);
        assert_eq!(CustomerKey::parse("a b"), None);
        assert_eq!(CustomerKey::parse("x{y}"), None);
        let g = CustomerKey::parse("group:Y2Fw/aV9=").unwrap();
        assert_eq!(g.group_id(), Some("Y2Fw/aV9="));
        assert_eq!(CustomerKey::group("a b"), None);
        assert_eq!(CustomerKey::group("{x}"), None);
    }

    #[test]
    fn number_wins_over_user_id() {
        assert_eq!(
            CustomerKey::from_parts(Some("+1 555"), Some("US.1")),
            Some(CustomerKey::WaId("1555".into()))
        );
        assert_eq!(
            CustomerKey::from_parts(None, Some("US.1")),
            Some(CustomerKey::UserId("US.1".into()))
        );
        assert_eq!(
            CustomerKey::from_parts(Some("not a number"), Some("US.1")),
            Some(CustomerKey::UserId("US.1".into()))
        );
        assert_eq!(CustomerKey::from_parts(None, None), None);
    }

    #[test]
    fn digits_are_redacted_for_logs() {
        assert_eq!(redact_digits("c:5215551230001:add:42"), "c:…0001:add:42");
        assert_eq!(redact_digits("m:wamid.ST1"), "m:wamid.ST1");
        assert_eq!(redact_digits("12345"), "…2345");
    }

    #[test]
    fn scope_round_trips() {
        for s in [
            "410:5215551230001",
            "410:US.99",
            "410:",
            "410:group:Y2FwaV9ncm91cDox",
        ] {
            assert_eq!(Scope::parse(s).unwrap().to_string(), s);
        }
        assert!(Scope::parse(":1").is_none());
        assert!(Scope::parse("nocolon").is_none());
    }

    #[test]
    fn stable_ids_are_deterministic_and_distinct() {
        let a = stable_id(&["410", "m:wamid.1", "message.received"]);
        assert_eq!(a, stable_id(&["410", "m:wamid.1", "message.received"]));
        assert_ne!(a, stable_id(&["410", "m:wamid.1", "message.status"]));
        // Length-prefixing keeps ("ab","c") and ("a","bc") apart.
        assert_ne!(stable_id(&["ab", "c"]), stable_id(&["a", "bc"]));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
    }
}
