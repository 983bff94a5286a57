//! R17: whether a reply of the AI agent may reach the customer, judged on the conversation's
//! state as it is now. The reply gate asks this for every reply; the property tests ask it
//! beside the rules.

use super::event::Refusal;
use super::state::State;
use super::{reply_token, Rules};
use crate::core::domain::Scope;
use crate::core::time::Millis;

/// What the gate knows of a reply.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The `reply_token` it came with (`X-Coexist-Reply-Token`), if any.
    pub token: Option<&'a str>,
    /// A free-form message (not a template): only within the customer service window.
    pub free_form: bool,
}

/// `Ok` when the reply may go to Meta, else why not: a human holds the conversation (a pause in
/// force); the token names an earlier hand; a free-form message past the service window of the
/// customer's latest message. `conversation` is the conversation the state is of.
pub fn judge(
    state: &State,
    conversation: &Scope,
    reply: Reply<'_>,
    now: Millis,
    rules: &Rules,
) -> Result<(), Refusal> {
    if state.paused(now).is_some() {
        return Err(Refusal::ConversationHeld);
    }
    if let Some(token) = reply.token {
        if token != reply_token(conversation, state.hand_at(now)) {
            return Err(Refusal::StaleReply);
        }
    }
    if reply.free_form {
        let open = state
            .last_customer_at
            .is_some_and(|at| now < at.plus(rules.service_window));
        if !open {
            return Err(Refusal::OutsideServiceWindow);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::domain::CustomerKey;
    use crate::core::engine::state::Pause;

    const HOUR: i64 = 3_600_000;

    fn scope() -> Scope {
        Scope::conversation("410", CustomerKey::WaId("5215551230001".into()))
    }

    fn open_state() -> State {
        State {
            hand: 2,
            last_customer_at: Some(Millis(10 * HOUR)),
            ..State::default()
        }
    }

    fn reply(token: Option<&str>, free_form: bool) -> Reply<'_> {
        Reply { token, free_form }
    }

    #[test]
    fn a_reply_with_the_current_token_inside_the_window_passes() {
        let now = Millis(11 * HOUR);
        let token = reply_token(&scope(), 2);
        let rules = Rules::default();
        let state = open_state();
        assert_eq!(
            judge(&state, &scope(), reply(Some(&token), true), now, &rules),
            Ok(())
        );
        assert_eq!(
            judge(&state, &scope(), reply(None, true), now, &rules),
            Ok(())
        );
        let earlier = reply_token(&scope(), 1);
        assert_eq!(
            judge(&state, &scope(), reply(Some(&earlier), true), now, &rules),
            Err(Refusal::StaleReply)
        );
        let other = reply_token(
            &Scope::conversation("410", CustomerKey::WaId("1".into())),
            2,
        );
        assert_eq!(
            judge(&state, &scope(), reply(Some(&other), true), now, &rules),
            Err(Refusal::StaleReply),
            "another conversation's token"
        );
    }

    #[test]
    fn a_pause_in_force_holds_every_reply_and_its_end_changes_hands() {
        let rules = Rules::default();
        let mut state = open_state();
        state.pause = Some(Pause {
            until: Millis(12 * HOUR),
            since: Millis(11 * HOUR),
            trigger: "m:wamid.E".into(),
            by: crate::core::engine::event::By::business_app(),
        });
        let token = reply_token(&scope(), 2);
        let held = judge(
            &state,
            &scope(),
            reply(Some(&token), false),
            Millis(11 * HOUR + 1),
            &rules,
        );
        assert_eq!(held, Err(Refusal::ConversationHeld));
        // Past its deadline the pause has ended (R7), release recorded or not: a new hand.
        let after = Millis(12 * HOUR);
        assert_eq!(
            judge(&state, &scope(), reply(Some(&token), false), after, &rules),
            Err(Refusal::StaleReply)
        );
        let now_token = reply_token(&scope(), 3);
        assert_eq!(
            judge(
                &state,
                &scope(),
                reply(Some(&now_token), false),
                after,
                &rules
            ),
            Ok(())
        );
    }

    #[test]
    fn free_form_only_inside_the_window_templates_always() {
        let rules = Rules::default();
        let state = open_state();
        let edge = Millis(10 * HOUR + 24 * HOUR);
        assert_eq!(
            judge(&state, &scope(), reply(None, true), edge, &rules),
            Err(Refusal::OutsideServiceWindow)
        );
        assert_eq!(
            judge(&state, &scope(), reply(None, false), edge, &rules),
            Ok(())
        );
        assert_eq!(
            judge(&State::default(), &scope(), reply(None, true), edge, &rules),
            Err(Refusal::OutsideServiceWindow),
            "no customer message yet: no window"
        );
    }
}
