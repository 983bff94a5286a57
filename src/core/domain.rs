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
            return Some(CustomerKey::phone(&digits));
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

    /// A customer as an operator types one (`conversation pause`, the console's forms): stricter
    /// than [`CustomerKey::parse`], which reads whatever Meta sends. A phone number has 6 to 15
    /// digits (E.164); a business-scoped id is a country's two letters, a dot and the rest
    /// (`US.13491208655302741918`); a group is `group:{id}`. A word such as `hello`, or a number
    /// too short to be anyone's, is refused.
    pub fn parse_typed(s: &str) -> Option<Self> {
        let key = Self::parse(s)?;
        let fits = match &key {
            CustomerKey::WaId(digits) => (6..=15).contains(&digits.len()),
            CustomerKey::UserId(id) => {
                let b = id.as_bytes();
                b.len() > 3
                    && b[0].is_ascii_uppercase()
                    && b[1].is_ascii_uppercase()
                    && b[2] == b'.'
            }
            CustomerKey::Group(_) => true,
        };
        fits.then_some(key)
    }

    /// From Meta's fields: `wa_id`-like number first, the user id when the number is withheld.
    pub fn from_parts(number: Option<&str>, user_id: Option<&str>) -> Option<Self> {
        number
            .and_then(phone_digits)
            .map(|d| CustomerKey::phone(&d))
            .or_else(|| {
                user_id
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .and_then(CustomerKey::parse)
            })
    }

    /// A phone number's key: its digits in the one form of [`phone_identity`], so a number
    /// Meta writes two ways is one conversation.
    pub fn phone(digits: &str) -> Self {
        CustomerKey::WaId(phone_identity(digits))
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

/// The one form of a phone number that Meta writes two ways, so that both are one customer:
///
/// - Mexico: `52` + 10 digits and Meta's `wa_id` `521` + 10 digits: the `521` form;
/// - Argentina: `54` + 10 digits and `549` + 10 digits (the mobile prefix): the `549` form;
/// - Brazil: a mobile number with and without the ninth digit (`55` + area code + 8 digits
///   beginning 6-9, as WhatsApp ids registered before the ninth digit still are): the 13-digit
///   form with the `9`. Landlines (8 digits beginning 2-5) are left as they are.
///
/// Every other number is its digits. Input is digits only (see [`phone_digits`]).
pub fn phone_identity(digits: &str) -> String {
    let d = digits.as_bytes();
    match (d.len(), digits.get(..2)) {
        (12, Some("52")) if d[2] != b'1' => format!("521{}", &digits[2..]),
        (12, Some("54")) if d[2] != b'9' => format!("549{}", &digits[2..]),
        (12, Some("55"))
            if BRAZIL_AREAS.contains(&&digits[2..4]) && matches!(d[4], b'6'..=b'9') =>
        {
            format!("55{}9{}", &digits[2..4], &digits[4..])
        }
        _ => digits.to_owned(),
    }
}

/// Brazil's area codes (DDD), from ANATEL's plan.
const BRAZIL_AREAS: [&str; 67] = [
    "11", "12", "13", "14", "15", "16", "17", "18", "19", "21", "22", "24", "27", "28", "31", "32",
    "33", "34", "35", "37", "38", "41", "42", "43", "44", "45", "46", "47", "48", "49", "51", "53",
    "54", "55", "61", "62", "63", "64", "65", "66", "67", "68", "69", "71", "73", "74", "75", "77",
    "79", "81", "82", "83", "84", "85", "86", "87", "88", "89", "91", "92", "93", "94", "95", "96",
    "97", "98", "99",
];

/// Whether two phone numbers (as Meta or an operator writes them) are one customer's.
pub fn same_phone(a: Option<&str>, b: Option<&str>) -> bool {
    let one = |s: Option<&str>| s.and_then(phone_digits).map(|d| phone_identity(&d));
    match (one(a), one(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
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
            .map(|d| CustomerKey::phone(&d));
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
        same_phone(self.wa_id.as_deref(), other.wa_id.as_deref())
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

/// Whether a Graph API version is of Meta's form: `v` and two numbers (`v23.0`).
pub fn valid_graph_version(s: &str) -> bool {
    let Some((major, minor)) = s.strip_prefix('v').and_then(|v| v.split_once('.')) else {
        return false;
    };
    let number = |n: &str| (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit());
    number(major) && number(minor)
}

/// Whether a path segment is a `phone_number_id` as Meta writes it: digits only.
pub fn numeric_phone_number_id(s: &str) -> bool {
    (1..=32).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
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
    fn an_operator_types_a_phone_number_a_business_scoped_id_or_a_group() {
        for ok in [
            "+52 1 555 123 0001",
            "15550004444",
            "US.13491208655302741918",
            "group:ABC123",
        ] {
            assert!(CustomerKey::parse_typed(ok).is_some(), "{ok}");
        }
        for no in [
            "hello",
            "12345",
            "reset",
            "us.123",
            "X.1",
            "1234567890123456",
        ] {
            assert!(CustomerKey::parse_typed(no).is_none(), "{no}");
        }
    }

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
    fn numbers_meta_writes_two_ways_have_one_identity() {
        let one = |a: &str, b: &str| {
            assert_eq!(CustomerKey::parse(a), CustomerKey::parse(b), "{a} / {b}");
            assert!(same_phone(Some(a), Some(b)), "{a} / {b}");
        };
        one("+52 55 5123 0001", "5215551230001");
        one("+54 11 5874 9895", "5491158749895");
        one("+55 92 8172 3241", "5592981723241");
        one("+55 11 8765 4321", "5511987654321");
        assert_eq!(phone_identity("5592981723241"), "5592981723241");
        // A Brazilian landline has no ninth digit to add; other countries are their digits.
        assert_eq!(phone_identity("551132345678"), "551132345678");
        assert_ne!(
            CustomerKey::parse("551132345678"),
            CustomerKey::parse("5511932345678")
        );
        assert_eq!(phone_identity("14155550100"), "14155550100");
        assert!(!same_phone(Some("5215551230001"), Some("5215551230002")));
        assert!(!same_phone(None, None));
    }

    #[test]
    fn graph_paths_take_only_metas_forms() {
        for ok in ["v23.0", "v9.1", "v123.456"] {
            assert!(valid_graph_version(ok), "{ok}");
        }
        for bad in [
            "", ".", "..", "%2e%2e", "v23", "23.0", "v23.0.1", "v.0", "vx.0", "v1234.0",
        ] {
            assert!(!valid_graph_version(bad), "{bad}");
        }
        assert!(numeric_phone_number_id("106540352242922"));
        for bad in ["", ".", "..", "pn-1", "1.2", "%2e", &"1".repeat(33)] {
            assert!(!numeric_phone_number_id(bad), "{bad}");
        }
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
