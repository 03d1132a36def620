//! The action lifecycles of PROTOCOL.md section 2, as data.
//!
//! Each media type has a table of (from, allowed next states); terminal states are the ones
//! with no row. This module only answers "may an action go from here to there"; it holds no
//! actions and does no IO. Duplicates (a report of the state an action is already in) are
//! the sequencer's business, because they depend on `eventId`.

use std::fmt;

/// The kinds of web action.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum MediaType {
    Webchat,
    ContentOffer,
}

/// Every lifecycle state of any media type.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum ActionState {
    Qualified,
    Offered,
    Accepted,
    Rejected,
    Ignored,
    TimedOut,
    Errored,
    Started,
    Engaged,
    Ended,
}

use ActionState::*;

/// One row of a lifecycle table: from a state (or `None`, a new action) to its allowed next.
type Row = (Option<ActionState>, &'static [ActionState]);

const WEBCHAT: &[Row] = &[
    (None, &[Qualified, Offered]),
    (Some(Qualified), &[Offered, Errored]),
    (
        Some(Offered),
        &[Accepted, Rejected, Ignored, TimedOut, Errored],
    ),
    (Some(Accepted), &[Started, Rejected, Errored]),
    (Some(Started), &[Engaged, Ended, Errored]),
    (Some(Engaged), &[Ended, Errored]),
];

const CONTENT_OFFER: &[Row] = &[
    (None, &[Qualified, Offered]),
    (Some(Qualified), &[Offered, Errored]),
    (Some(Offered), &[Accepted, Rejected, Ignored, Errored]),
];

const WEBCHAT_STATES: &[ActionState] = &[
    Qualified, Offered, Accepted, Rejected, Ignored, TimedOut, Errored, Started, Engaged, Ended,
];
const CONTENT_OFFER_STATES: &[ActionState] =
    &[Qualified, Offered, Accepted, Rejected, Ignored, Errored];

/// Why a transition was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug, thiserror::Error)]
pub enum TransitionError {
    /// The state is not in the media type's table at all.
    #[error("{media} has no state {state}")]
    UnknownState {
        media: MediaType,
        state: ActionState,
    },
    /// The state exists but may not follow the current one.
    #[error("{media} action cannot go from {} to {to}", from.map_or("(new)", ActionState::as_str))]
    NotAllowed {
        media: MediaType,
        from: Option<ActionState>,
        to: ActionState,
    },
    /// The action already ended; nothing may follow.
    #[error("{media} action is already {state}, a terminal state")]
    Terminal {
        media: MediaType,
        state: ActionState,
    },
}

impl MediaType {
    /// Every media type, in a fixed order.
    pub const ALL: [MediaType; 2] = [MediaType::Webchat, MediaType::ContentOffer];

    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Webchat => "webchat",
            MediaType::ContentOffer => "contentoffer",
        }
    }

    pub fn parse(text: &str) -> Option<MediaType> {
        MediaType::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// The states this media type knows, terminal or not.
    pub fn states(self) -> &'static [ActionState] {
        match self {
            MediaType::Webchat => WEBCHAT_STATES,
            MediaType::ContentOffer => CONTENT_OFFER_STATES,
        }
    }

    fn table(self) -> &'static [Row] {
        match self {
            MediaType::Webchat => WEBCHAT,
            MediaType::ContentOffer => CONTENT_OFFER,
        }
    }

    /// Whether `state` belongs to this media type.
    pub fn has_state(self, state: ActionState) -> bool {
        self.states().contains(&state)
    }

    /// The states allowed after `from` (`None`: a new action). Empty for terminal states.
    pub fn allowed_next(self, from: Option<ActionState>) -> &'static [ActionState] {
        self.table()
            .iter()
            .find(|(row_from, _)| *row_from == from)
            .map_or(&[], |(_, next)| next)
    }

    /// A state is terminal when nothing may follow it.
    pub fn is_terminal(self, state: ActionState) -> bool {
        self.has_state(state) && self.allowed_next(Some(state)).is_empty()
    }

    /// Checks a transition of an action of this media type from `from` to `to`.
    pub fn check(self, from: Option<ActionState>, to: ActionState) -> Result<(), TransitionError> {
        if !self.has_state(to) {
            return Err(TransitionError::UnknownState {
                media: self,
                state: to,
            });
        }
        if let Some(state) = from.filter(|s| self.is_terminal(*s)) {
            return Err(TransitionError::Terminal { media: self, state });
        }
        if self.allowed_next(from).contains(&to) {
            Ok(())
        } else {
            Err(TransitionError::NotAllowed {
                media: self,
                from,
                to,
            })
        }
    }
}

impl ActionState {
    /// Every state, in a fixed order.
    pub const ALL: [ActionState; 10] = [
        Qualified, Offered, Accepted, Rejected, Ignored, TimedOut, Errored, Started, Engaged, Ended,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Qualified => "qualified",
            Offered => "offered",
            Accepted => "accepted",
            Rejected => "rejected",
            Ignored => "ignored",
            TimedOut => "timedout",
            Errored => "errored",
            Started => "started",
            Engaged => "engaged",
            Ended => "ended",
        }
    }

    pub fn parse(text: &str) -> Option<ActionState> {
        ActionState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for MediaType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for ActionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tables of PROTOCOL.md section 2, written out independently of the code's
    /// tables as (media, from, to) triples that are allowed. Everything else is refused.
    const ALLOWED: &[(&str, &str, &str)] = &[
        ("webchat", "", "qualified"),
        ("webchat", "", "offered"),
        ("webchat", "qualified", "offered"),
        ("webchat", "qualified", "errored"),
        ("webchat", "offered", "accepted"),
        ("webchat", "offered", "rejected"),
        ("webchat", "offered", "ignored"),
        ("webchat", "offered", "timedout"),
        ("webchat", "offered", "errored"),
        ("webchat", "accepted", "started"),
        ("webchat", "accepted", "rejected"),
        ("webchat", "accepted", "errored"),
        ("webchat", "started", "engaged"),
        ("webchat", "started", "ended"),
        ("webchat", "started", "errored"),
        ("webchat", "engaged", "ended"),
        ("webchat", "engaged", "errored"),
        ("contentoffer", "", "qualified"),
        ("contentoffer", "", "offered"),
        ("contentoffer", "qualified", "offered"),
        ("contentoffer", "qualified", "errored"),
        ("contentoffer", "offered", "accepted"),
        ("contentoffer", "offered", "rejected"),
        ("contentoffer", "offered", "ignored"),
        ("contentoffer", "offered", "errored"),
    ];

    const TERMINAL: &[(&str, &str)] = &[
        ("webchat", "rejected"),
        ("webchat", "ignored"),
        ("webchat", "timedout"),
        ("webchat", "errored"),
        ("webchat", "ended"),
        ("contentoffer", "accepted"),
        ("contentoffer", "rejected"),
        ("contentoffer", "ignored"),
        ("contentoffer", "errored"),
    ];

    fn name(state: Option<ActionState>) -> &'static str {
        state.map_or("", ActionState::as_str)
    }

    /// Every (from, to) pair of every media type, including pairs with states the media
    /// type does not have, checked against the spec's tables above.
    #[test]
    fn every_pair_of_every_media_type() {
        let froms = std::iter::once(None).chain(ActionState::ALL.map(Some));
        let froms: Vec<_> = froms.collect();
        let mut checked = 0;
        for media in MediaType::ALL {
            for &from in &froms {
                if from.is_some_and(|s| !media.has_state(s)) {
                    continue; // an action can never be in a state its media type lacks
                }
                for to in ActionState::ALL {
                    let result = media.check(from, to);
                    let allowed = ALLOWED.contains(&(media.as_str(), name(from), to.as_str()));
                    let from_terminal =
                        from.is_some_and(|s| TERMINAL.contains(&(media.as_str(), s.as_str())));
                    let expected = if !media.has_state(to) {
                        "unknown"
                    } else if from_terminal {
                        "terminal"
                    } else if allowed {
                        "ok"
                    } else {
                        "not allowed"
                    };
                    let got = match result {
                        Ok(()) => "ok",
                        Err(TransitionError::UnknownState { .. }) => "unknown",
                        Err(TransitionError::Terminal { .. }) => "terminal",
                        Err(TransitionError::NotAllowed { .. }) => "not allowed",
                    };
                    assert_eq!(got, expected, "{media} {} -> {to}", name(from));
                    checked += 1;
                }
            }
        }
        // (1 + 10 states) x 10 for webchat, (1 + 6) x 10 for contentoffer.
        assert_eq!(checked, 110 + 70);
    }

    #[test]
    fn terminal_states_match_the_spec() {
        for media in MediaType::ALL {
            for &state in media.states() {
                let expected = TERMINAL.contains(&(media.as_str(), state.as_str()));
                assert_eq!(media.is_terminal(state), expected, "{media} {state}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        for state in ActionState::ALL {
            assert_eq!(ActionState::parse(state.as_str()), Some(state));
        }
        for media in MediaType::ALL {
            assert_eq!(MediaType::parse(media.as_str()), Some(media));
        }
        assert_eq!(ActionState::parse("Offered"), None);
        assert_eq!(MediaType::parse("chat"), None);
    }
}
