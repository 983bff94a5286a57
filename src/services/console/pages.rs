//! The console's pages: HTML from templates the compiler checks (maud), every value escaped.

use maud::{html, Markup, DOCTYPE};

/// A conversation with a human, as the first page lists it.
pub struct Held {
    /// An opaque reference to the conversation, valid for this session.
    pub reference: String,
    pub number: String,
    /// The number's label, if it has one.
    pub label: Option<String>,
    /// The customer, masked unless `log_content`.
    pub customer: String,
    /// The customer's profile name, when a kept message carried it.
    pub name: Option<String>,
    /// The latest message kept for the conversation.
    pub last: Option<LastMessage>,
    pub since: String,
    pub until: String,
    pub by: String,
    pub trigger: String,
}

/// A conversation's latest message, for the list.
pub struct LastMessage {
    /// Who said it, with its icon.
    pub who: String,
    pub text: String,
    /// RFC 3339.
    pub at: String,
}

/// Who said a message, with its icon, as the pages show it.
pub fn who(m: &crate::core::engine::why::Said) -> String {
    use crate::core::engine::event::Source;
    match m.source {
        Source::Customer => m.from.clone().unwrap_or_else(|| "Customer".into()),
        Source::BusinessApp => "📱 Business App".into(),
        Source::BusinessAppAutomation => "📱 Business App (automatic)".into(),
        Source::Bot => "🤖 AI agent".into(),
        Source::OtherApp => "Another app".into(),
        Source::History => "History".into(),
    }
}

/// A dead letter, as its page lists it.
pub struct Dead {
    pub id: String,
    pub kind: String,
    pub stage: String,
    pub reason: String,
    pub attempts: i64,
    pub age: String,
    pub preview: String,
}

/// The page around every page: navigation, who is signed in, sign-out.
pub struct Frame<'a> {
    pub title: &'a str,
    /// The navigation entry of this page: `held`, `live`, `dead`, `numbers`.
    pub current: &'a str,
    pub operator: &'a str,
    pub csrf: &'a str,
    /// What the last action did (`Ok`) or why it failed (`Err`).
    pub said: Option<Result<String, String>>,
    /// Reload every this many seconds (0: never).
    pub refresh: u32,
}

/// The choices of a pause's or an extension's length.
pub const DURATIONS: &[(&str, &str)] = &[
    ("30m", "30 minutes"),
    ("2h", "2 hours"),
    ("8h", "8 hours"),
    ("1d", "1 day"),
    ("3d", "3 days"),
    ("7d", "7 days"),
];

fn head(title: &str) -> Markup {
    html! {
        (DOCTYPE)
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · coexist" }
        link rel="stylesheet" href="/assets/console.css";
        script src="/assets/console.js" defer {}
    }
}

fn page(f: &Frame<'_>, body: Markup) -> Markup {
    let nav = [
        ("held", "/", "With a human now"),
        ("live", "/live", "Live events"),
        ("dead", "/dead", "Dead letters"),
        ("numbers", "/numbers", "Numbers"),
    ];
    html! {
        (head(f.title))
        body data-refresh=(f.refresh) {
            header {
                span.brand { "coexist" }
                nav {
                    @for (key, href, label) in nav {
                        @if key == f.current {
                            a href=(href) aria-current="page" { (label) }
                        } @else {
                            a href=(href) { (label) }
                        }
                    }
                }
                span.muted { "Signed in as " b { (f.operator) } }
                form method="post" action="/logout" {
                    input type="hidden" name="csrf" value=(f.csrf);
                    button.quiet type="submit" { "Sign out" }
                }
            }
            main {
                h1 { (f.title) }
                @match &f.said {
                    Some(Ok(text)) => p.said role="status" { (text) },
                    Some(Err(text)) => p.said.error role="alert" { (text) },
                    None => {},
                }
                (body)
            }
        }
    }
}

fn durations(selected: &str) -> Markup {
    html! {
        @for (value, label) in DURATIONS {
            @if *value == selected {
                option value=(value) selected { (label) }
            } @else {
                option value=(value) { (label) }
            }
        }
    }
}

/// The sign-in page.
pub fn login(error: Option<&str>) -> Markup {
    html! {
        (head("Sign in"))
        body {
            main {
                form.login method="post" action="/login" {
                    h1 { "coexist console" }
                    @if let Some(e) = error { p.said.error role="alert" { (e) } }
                    label for="token" { "Operator token" }
                    input #token type="password" name="token" autocomplete="current-password" required autofocus;
                    button type="submit" { "Sign in" }
                }
            }
        }
    }
}

/// The first page: every conversation with a human now, soonest release first.
/// A page of the conversations with a human now.
pub struct HeldPage<'a> {
    pub rows: &'a [Held],
    /// Business numbers among the rows.
    pub numbers: usize,
    /// Conversations with a human in all.
    /// Every number's (absent for an operator limited to some numbers).
    pub total: Option<u64>,
    /// Where the next page starts, if there is one.
    pub more: Option<String>,
    /// Whether this is the first page.
    pub first: bool,
}

pub fn held(f: &Frame<'_>, p: &HeldPage<'_>) -> Markup {
    let rows = p.rows;
    page(
        f,
        html! {
            ul.counts {
                @if let Some(total) = p.total {
                    li { b { (total) } " conversation(s) with a human" }
                }
                li { b { (p.numbers) } " business number(s) on this page" }
            }
            @if rows.is_empty() {
                p.empty { "Nobody is with a human now: the AI agent handles every conversation." }
            } @else {
                table {
                    thead { tr {
                        th { "Number" } th { "Customer" } th { "Last message" } th { "Since" }
                        th { "Back to the AI agent" } th { "Paused by" } th { "Actions" }
                    } }
                    tbody {
                        @for r in rows {
                            tr {
                                td data-label="Number" {
                                    @if let Some(l) = &r.label { (l) br; span.muted { (r.number) } }
                                    @else { (r.number) }
                                }
                                td data-label="Customer" { a href={ "/conversation?ref=" (r.reference) } {
                                    @if let Some(n) = &r.name { (n) " " span.muted { (r.customer) } }
                                    @else { (r.customer) }
                                } }
                                td data-label="Last message" {
                                    @if let Some(m) = &r.last {
                                        span.who { (m.who) } " " span.muted { (moment(&m.at)) } br;
                                        span.last { (m.text) }
                                    } @else { span.muted { "-" } }
                                }
                                td data-label="Since" { (moment(&r.since)) }
                                td data-label="Back to the AI agent" { (moment(&r.until)) }
                                td data-label="Paused by" { (r.by) }
                                td data-label="Actions" {
                                    form method="post" action="/release" {
                                        input type="hidden" name="csrf" value=(f.csrf);
                                        input type="hidden" name="conversation" value=(r.reference);
                                        button type="submit" { "Release" }
                                    }
                                    form method="post" action="/extend" {
                                        input type="hidden" name="csrf" value=(f.csrf);
                                        input type="hidden" name="conversation" value=(r.reference);
                                        select name="duration" aria-label="Extend by" { (durations("2h")) }
                                        button.quiet type="submit" { "Extend" }
                                    }
                                }
                            }
                        }
                    }
                }
                p.pager {
                    @if !p.first { a href="/" { "First page" } " " }
                    @if let Some(more) = &p.more {
                        a href={ "/?after=" (query_value(more)) } { "More…" }
                    }
                }
            }
            h2 { "Pause a conversation" }
            form.pause method="post" action="/pause" {
                input type="hidden" name="csrf" value=(f.csrf);
                label { "Business number (phone_number_id)" input name="number" required inputmode="numeric"; }
                label { "Customer (phone or business-scoped id)" input name="customer" required; }
                label { "For" select name="duration" { (durations("1d")) } }
                button type="submit" { "Pause" }
            }
            h2 { "Find a conversation" }
            p.muted { "Its messages as the Human Chat shows them, and why each went where it went." }
            (search_form())
        },
    )
}

/// An event the live view shows.
pub struct LiveLine {
    /// Its conversation's reference, if it is about one.
    pub reference: Option<String>,
    pub exchange: &'static str,
    pub kind: String,
    /// Its readable line (digits masked unless `log_content`).
    pub line: String,
}

/// The live view: the latest events (newest first), then the events as they are published.
pub fn live(f: &Frame<'_>, recent: &[LiveLine]) -> Markup {
    page(
        f,
        html! {
            form #filters .filters {
                label { "Exchange " select name="exchange" {
                    option value="" { "both" }
                    option value="bot" { "bot" }
                    option value="human_chat" { "human_chat" }
                } }
                label { "Conversation " input name="conversation" placeholder="PHONE_NUMBER_ID:CUSTOMER"; }
                button.quiet type="submit" { "Apply" }
                button.quiet #toggle type="button" { "Pause" }
                span #state .state { "not connected" }
            }
            noscript { p.said.error { "The live view needs JavaScript; every other page works without it." } }
            ul #events {
                @for e in recent {
                    li data-exchange=(e.exchange) data-type=(e.kind) {
                        (e.line) " "
                        @if let Some(r) = &e.reference { a href={ "/conversation?ref=" (r) } { "conversation" } }
                    }
                }
            }
        },
    )
}

/// The dead letters, each with its actions.
pub fn dead(f: &Frame<'_>, rows: &[Dead], total: usize) -> Markup {
    page(
        f,
        html! {
            ul.counts { li { b { (total) } " dead letter(s)" } }
            @if rows.len() < total {
                p.muted { "The oldest " (rows.len()) " are shown; they move to the back of the queue as they are looked at, so reloading shows the next ones." }
            }
            @if rows.is_empty() {
                p.empty { "No dead letters." }
            } @else {
                p {
                    a href="/dead/confirm?action=replay&id=all" { "Replay all…" }
                }
                table {
                    thead { tr {
                        th { "Id" } th { "Stage" } th { "Reason" } th { "Attempts" } th { "Age" }
                        th { "Preview" } th { "Actions" }
                    } }
                    tbody {
                        @for d in rows {
                            tr {
                                td data-label="Id" { code { (d.id) } br; span.muted { (d.kind) } }
                                td data-label="Stage" { (d.stage) }
                                td data-label="Reason" { (d.reason) }
                                td data-label="Attempts" { (d.attempts) }
                                td data-label="Age" { (d.age) }
                                td data-label="Preview" { code { (d.preview) } }
                                td data-label="Actions" {
                                    a href={ "/dead/confirm?action=replay&id=" (query_value(&d.id)) } { "Replay…" }
                                    " · "
                                    a href={ "/dead/confirm?action=discard&id=" (query_value(&d.id)) } { "Discard…" }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A value written into a link's query: every byte but unreserved ones percent-encoded, so an
/// id with `+`, `&` or `#` names itself and not another letter.
pub fn query_value(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Asks before a dead letter is replayed or discarded.
pub fn confirm(f: &Frame<'_>, action: &str, id: &str, what: &str) -> Markup {
    page(
        f,
        html! {
            p { (what) }
            form method="post" action={ "/dead/" (action) } {
                input type="hidden" name="csrf" value=(f.csrf);
                input type="hidden" name="id" value=(id);
                @if action == "discard" {
                    button.danger type="submit" { "Yes, discard it" }
                } @else {
                    button type="submit" { "Yes, replay" }
                }
                " "
                a href="/dead" { "No, go back" }
            }
        },
    )
}

/// A conversation's page.
pub struct ConversationPage<'a> {
    /// The conversation's reference for this session's actions.
    pub reference: String,
    pub number: String,
    /// The number's label, if it has one.
    pub label: Option<String>,
    /// The customer, masked unless `log_content`.
    pub customer: String,
    /// The customer's profile name, when a message carried it.
    pub name: Option<String>,
    pub explained: &'a crate::tools::explain::Explained,
    /// A message's text as the page shows it (digits masked unless `log_content`).
    pub text: &'a dyn Fn(&str) -> String,
}

/// An instant for people: `<time>` with the exact UTC time; the page's script shows it
/// relative ("2 minutes ago") in the browser's time zone, with the exact time on hover.
pub fn moment(rfc3339: &str) -> Markup {
    let readable = crate::core::time::Millis::parse_rfc3339(rfc3339)
        .map_or_else(|| rfc3339.to_owned(), crate::core::engine::why::when);
    html! { time datetime=(rfc3339) title=(readable) { (readable) } }
}

fn maybe_moment(at: &Option<String>) -> Markup {
    match at {
        Some(at) => moment(at),
        None => html! { "-" },
    }
}

fn search_form() -> Markup {
    html! {
        form.search method="get" action="/conversation" {
            label { "Business number (phone_number_id)" input name="number" required inputmode="numeric"; }
            label { "Customer (phone or business-scoped id)" input name="customer" required; }
            button type="submit" { "Show the conversation" }
        }
    }
}

/// The search for a conversation by number and customer.
pub fn conversation_search(f: &Frame<'_>) -> Markup {
    page(
        f,
        html! {
            p.muted { "Any of the customer's numbers or ids finds the conversation." }
            (search_form())
        },
    )
}

/// One conversation: as the Human Chat shows it, its state, why, and its actions.
pub fn conversation(f: &Frame<'_>, p: &ConversationPage<'_>) -> Markup {
    use crate::core::engine::event::Source;
    let e = p.explained;
    let v = &e.state;
    let messages: Vec<(
        &crate::core::engine::why::TrailEntry,
        &crate::core::engine::why::Said,
    )> = e
        .trail
        .iter()
        .filter_map(|t| Some((t, t.message.as_ref()?)))
        .collect();
    let side = |m: &crate::core::engine::why::Said| -> &'static str {
        match (m.source, m.refused.is_some()) {
            (_, true) => "msg refused",
            (Source::Customer, _) => "msg customer",
            (Source::Bot, _) => "msg bot",
            _ => "msg app",
        }
    };
    page(
        f,
        html! {
            ul.counts {
                li { "Number " b { (p.label.as_deref().unwrap_or(&p.number)) }
                    @if p.label.is_some() { " " span.muted { (p.number) } } }
                li { "Customer " b { (p.name.as_deref().unwrap_or(&p.customer)) }
                    @if p.name.is_some() { " " span.muted { (p.customer) } } }
                li {
                    @match (&v.paused_until, &v.paused_by) {
                        (Some(until), Some(by)) => {
                            b.state.human { "With a human" } " until " (moment(until)) ", paused by "
                            (crate::core::engine::why::by_words(by))
                        },
                        _ => { b.state.bot { "With the AI agent" } },
                    }
                }
                @if e.number_state != crate::core::numbers::LifeState::Active && e.number_state != crate::core::numbers::LifeState::Unregistered {
                    li { "Number " span.warn { (e.number_state.as_str()) } }
                }
            }
            p.next { b { "The customer's next message: " } (e.next_message) }
            div.actions {
                @if v.paused {
                    form method="post" action="/release" {
                        input type="hidden" name="csrf" value=(f.csrf);
                        input type="hidden" name="conversation" value=(p.reference);
                        input type="hidden" name="back" value="conversation";
                        button type="submit" { "Release" }
                    }
                    form method="post" action="/extend" {
                        input type="hidden" name="csrf" value=(f.csrf);
                        input type="hidden" name="conversation" value=(p.reference);
                        input type="hidden" name="back" value="conversation";
                        select name="duration" aria-label="Extend by" { (durations("2h")) }
                        button.quiet type="submit" { "Extend" }
                    }
                } @else {
                    form method="post" action="/conversation/pause" {
                        input type="hidden" name="csrf" value=(f.csrf);
                        input type="hidden" name="conversation" value=(p.reference);
                        input type="hidden" name="back" value="conversation";
                        select name="duration" aria-label="Pause for" { (durations("1d")) }
                        button type="submit" { "Pause the AI agent" }
                    }
                }
            }
            h2 { "Messages" }
            @if messages.is_empty() {
                p.empty { "No message kept for this conversation (none yet, or older than the trail keeps)." }
            } @else {
                ol.chat {
                    @for (t, m) in &messages {
                        li class=(side(m)) {
                            span.who { (who(m)) } " " span.muted { (moment(&t.at)) }
                            @if let Some(reason) = &m.refused {
                                p { s { ((p.text)(&m.text)) } }
                                small.refused { "Not sent (" (reason) "): " (t.why) }
                            } @else {
                                p { ((p.text)(&m.text)) }
                            }
                        }
                    }
                }
            }
            h2 { "Why, step by step" }
            @if e.trail.is_empty() {
                p.empty { "No decision kept yet." }
            } @else {
                table.trail {
                    thead { tr { th { "When" } th { "Rule" } th { "What happened" } th { "Why" } } }
                    tbody {
                        @for t in &e.trail {
                            tr {
                                td data-label="When" { (moment(&t.at)) }
                                td data-label="Rule" { code { (t.rule) } }
                                td data-label="What happened" { (t.outcome) }
                                td data-label="Why" { (t.why) }
                            }
                        }
                    }
                }
            }
            h2 { "Another conversation" }
            (search_form())
        },
    )
}

/// The Numbers page: every number the operator may see, its state and what to do about it.
pub fn numbers(f: &Frame<'_>, rows: &[crate::tools::numbers::Listed], remedies: &[&str]) -> Markup {
    page(
        f,
        html! {
            @if rows.is_empty() {
                p.empty { "No number yet: one appears here with its first webhook, or when it is added (coexist number add)." }
            } @else {
                table {
                    thead { tr {
                        th { "Number" } th { "Name" } th { "State" } th { "Last webhook" }
                        th { "Last App message" } th { "With a human" }
                    } }
                    tbody {
                        @for (r, remedy) in rows.iter().zip(remedies) {
                            tr {
                                td data-label="Number" { a href={ "/numbers/" (r.phone_number_id) } { (r.phone_number_id) } }
                                td data-label="Name" { (r.name.as_deref().unwrap_or("-")) }
                                td data-label="State" {
                                    b.state { (r.state) }
                                    @if r.app_idle { " " span.warn { "app_idle" } }
                                    @if r.state != "active" || r.app_idle { br; small { (remedy) } }
                                    @if let Some(o) = &r.onboarding { br; small.onboarding { (onboarding_line(o)) } }
                                }
                                td data-label="Last webhook" { (maybe_moment(&r.last_webhook_at)) }
                                td data-label="Last App message" { (maybe_moment(&r.last_app_message_at)) }
                                td data-label="With a human" { (r.with_a_human) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// One line of where a number's onboarding stands: each sync, then the history's progress.
fn onboarding_line(o: &crate::core::onboarding::Onboarding) -> String {
    use crate::core::onboarding::SyncKind;
    let syncs: Vec<String> = SyncKind::ALL
        .iter()
        .map(|k| format!("{} {}", k.as_str(), result_words(o.sync(*k).result)))
        .collect();
    format!(
        "{}; {}",
        syncs.join(", "),
        crate::tools::onboard::progress_words(o)
    )
}

fn result_words(r: crate::core::onboarding::SyncResult) -> &'static str {
    use crate::core::onboarding::SyncResult;
    match r {
        SyncResult::NotRequested => "not asked yet",
        SyncResult::Unknown => "asked, answer unknown",
        SyncResult::Requested => "requested",
        SyncResult::Refused => "refused",
    }
}

/// The words shown for where a setting comes from.
fn origin_words(o: crate::core::numbers::Origin) -> &'static str {
    match o {
        crate::core::numbers::Origin::Runtime => "set here",
        crate::core::numbers::Origin::File => "configuration file",
        crate::core::numbers::Origin::Default => "default",
    }
}

/// One number: its state and remedy, its settings with where each comes from, a form that
/// changes them at once, and who changed what.
pub fn number(f: &Frame<'_>, s: &crate::tools::numbers::Shown) -> Markup {
    let r = &s.record;
    let value = |key: &str| {
        s.effective
            .iter()
            .find(|e| e.key == key)
            .map(|e| match &e.value {
                serde_json::Value::String(t) => t.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .filter_map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                other => other.to_string(),
            })
            .unwrap_or_default()
    };
    let action = format!("/numbers/{}/settings", r.phone_number_id);
    page(
        f,
        html! {
            ul.counts {
                li { "State " b.state { (r.state.as_str()) }
                    @if let Some(reason) = &r.state_reason { " (" (reason) ")" } }
                @if s.app_idle { li { span.warn { "app_idle" } } }
                li { "Last webhook " b { (maybe_moment(&r.last_webhook_at)) } }
                li { "Last App message " b { (maybe_moment(&r.last_app_message_at)) } }
            }
            p.remedy { (s.remedy) }
            @if let Some(o) = &r.onboarding {
                h2 { "Onboarding" }
                ul.onboarding {
                    li { "Began " b { (o.started_at.as_deref().unwrap_or("-")) }
                        " (Meta allows each sync once, within 24 hours of it)" }
                    li { "Checked at Meta " b { (o.checked_at.as_deref().unwrap_or("not yet")) }
                        @if let Some(p) = &o.platform_type { " · " (p) }
                        @if let Some(n) = &o.verified_name { " · " (n) } }
                    li { "Webhooks subscribed " b { (o.subscribed_at.as_deref().unwrap_or("not yet")) } }
                    @for k in crate::core::onboarding::SyncKind::ALL {
                        @let sync = o.sync(k);
                        li { (k.as_str()) " sync " b { (result_words(sync.result)) }
                            @if let Some(at) = &sync.requested_at { " · asked " (at) }
                            @if let Some(id) = &sync.request_id { " · request " code { (id) } }
                            @if let Some(e) = &sync.error { br; small { (e) } } }
                    }
                    li { (crate::tools::onboard::progress_words(o)) }
                }
            }
            table.settings {
                thead { tr { th { "Setting" } th { "Value" } th { "From" } } }
                tbody {
                    @for e in &s.effective {
                        tr {
                            td data-label="Setting" { code { (e.key) } }
                            td data-label="Value" { (e.value.to_string()) }
                            td data-label="From" { (origin_words(e.from)) }
                        }
                    }
                }
            }
            h2 { "Change settings" }
            p.muted { "Applies at once on every worker and gate (within 2 seconds). Leave a field empty to keep the configured value." }
            form.settings method="post" action=(action) {
                input type="hidden" name="csrf" value=(f.csrf);
                label { "Reset command" input name="reset_text" value=(value("reset_text")); }
                label { "Timeout (e.g. 7d)" input name="timeout" value=(value("timeout")); }
                label { "Session timeout" input name="session_timeout" value=(value("session_timeout")); }
                label { "Handback messages" input name="handback_messages" inputmode="numeric" value=(value("handback_messages")); }
                label { "Service window" input name="service_window" value=(value("service_window")); }
                label { "Automated texts (one per line)" textarea name="automated_texts" rows="3" { (value("automated_texts")) } }
                label { "Coexistence (App messages pause the AI agent)"
                    select name="coexistence" {
                        @for v in ["true", "false"] {
                            @if value("coexistence") == v { option value=(v) selected { (v) } }
                            @else { option value=(v) { (v) } }
                        }
                    }
                }
                button type="submit" { "Save" }
            }
            @if !r.changes.is_empty() {
                h2 { "Who changed what" }
                ul.changes {
                    @for c in &r.changes {
                        li { (c.at) " · " (crate::tools::operator::by_text(&c.by)) " · "
                            code { (serde_json::Value::Object(c.changed.clone()).to_string()) } }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_links_carry_the_id_encoded() {
        // Read back as a query the console's Query extractor reads it, each id names itself.
        for id in ["a+b", "a b", "x&id=all", "y#z", "ñ/%2B"] {
            let query = format!("action=replay&id={}", query_value(id));
            let read: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            assert_eq!(
                read,
                [
                    ("action".to_owned(), "replay".to_owned()),
                    ("id".to_owned(), id.to_owned())
                ],
                "{id}"
            );
        }
    }
}
