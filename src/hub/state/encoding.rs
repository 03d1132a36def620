//! The entities as a snapshot file holds them (`store::snapshot` owns the file: its
//! header, chunks, order and checksum), in the hand-written encoding of `store::codec`: a
//! field at a time, in a fixed order. A change here changes the snapshot format, and
//! with it `store::snapshot::FORMAT_VERSION`.

use std::collections::{BTreeMap, VecDeque};

use serde_json::{Map, Value};

use super::{
    Action, Activity, ClientInfo, Company, Customer, IdentityState, MapCounts, MapKey, Profile,
    SessionInfo, Transition,
};
use crate::ids::{ActionId, ActionMapId, CompanyId, CustomerId, Seq, SessionId, UserId, VisitorId};
use crate::ingest::event::{EndReason, EventData, LifecycleEvent, Software, VisitorKind};
use crate::ingest::lifecycle::{ActionState, MediaType};
use crate::store::codec::{Dec, DecodeError, Enc};

impl MapCounts {
    pub fn encode(key: &MapKey, m: &MapCounts, e: &mut Enc) {
        e.uuid(key.action_map_id.0);
        e.u32(key.action_map_version);
        e.str(key.media.as_str());
        e.u32(m.counts.len() as u32);
        for (state, n) in &m.counts {
            e.str(state.as_str());
            e.u64(*n);
        }
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<(MapKey, MapCounts), DecodeError> {
        let key = MapKey {
            action_map_id: ActionMapId(d.uuid()?),
            action_map_version: d.u32()?,
            media: media(d)?,
        };
        let n = d.u32()?;
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let state = action_state(d)?;
            counts.insert(state, d.u64()?);
        }
        Ok((key, MapCounts { counts }))
    }
}

fn media(d: &mut Dec<'_>) -> Result<MediaType, DecodeError> {
    MediaType::parse(d.str()?).ok_or(DecodeError("unknown media type"))
}

fn action_state(d: &mut Dec<'_>) -> Result<ActionState, DecodeError> {
    ActionState::parse(d.str()?).ok_or(DecodeError("unknown action state"))
}

const END_REASONS: [EndReason; 3] = [EndReason::Replaced, EndReason::Signout, EndReason::Idle];
const IDENTITIES: [IdentityState; 3] = [
    IdentityState::Anonymous,
    IdentityState::Recognized,
    IdentityState::Authenticated,
];

// An activity's kind byte. Formats 1 and 2 wrote a flag (1 a page view, 0 a track
// event), which these values keep; format 3 added a page view with its exit time after it.
const TRACK: u8 = 0;
const PAGE: u8 = 1;
const PAGE_EXITED: u8 = 2;

fn activity_kind(a: &Activity) -> u8 {
    match (a.kind, a.exited_at) {
        (VisitorKind::Page, None) => PAGE,
        (VisitorKind::Page, Some(_)) => PAGE_EXITED,
        _ => TRACK,
    }
}

impl Customer {
    pub fn encode(&self, e: &mut Enc) {
        e.u8(IDENTITIES
            .iter()
            .position(|i| *i == self.identity)
            .unwrap_or(0) as u8);
        e.opt_str(self.user_id.as_ref().map(UserId::as_str));
        e.opt_uuid(self.visitor_id.map(|v| v.0));
        e.u32(self.sessions.len() as u32);
        for s in &self.sessions {
            e.uuid(s.id.0);
            e.i64(s.started_at);
            e.i64(s.last_seen);
            e.bool(s.ended.is_some());
            if let Some((at, reason)) = s.ended {
                e.i64(at);
                e.u8(END_REASONS.iter().position(|r| *r == reason).unwrap_or(0) as u8);
            }
            e.u64(s.pages_viewed);
            e.u32(s.activity.len() as u32);
            for a in &s.activity {
                e.i64(a.at);
                e.u8(activity_kind(a));
                if let Some(exited_at) = a.exited_at {
                    e.i64(exited_at);
                }
                e.json(a.detail.as_object().unwrap_or(&Map::new()));
            }
        }
        e.opt_uuid(self.current_session.map(|s| s.0));
        e.u32(self.actions.len() as u32);
        for a in &self.actions {
            e.uuid(a.0);
        }
        e.i64(self.first_seen);
        e.i64(self.last_seen);
        e.u64(self.stamp.0);
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Customer, DecodeError> {
        let identity = *IDENTITIES
            .get(d.u8()? as usize)
            .ok_or(DecodeError("unknown identity state"))?;
        let user_id = d.opt_str()?.map(UserId::from);
        let visitor_id = d.opt_uuid()?.map(VisitorId);
        let n = d.u32()?;
        let mut sessions = VecDeque::with_capacity(n as usize);
        for _ in 0..n {
            let id = SessionId(d.uuid()?);
            let (started_at, last_seen) = (d.i64()?, d.i64()?);
            let ended = match d.bool()? {
                true => {
                    let at = d.i64()?;
                    let reason = *END_REASONS
                        .get(d.u8()? as usize)
                        .ok_or(DecodeError("unknown end reason"))?;
                    Some((at, reason))
                }
                false => None,
            };
            let pages_viewed = d.u64()?;
            let n = d.u32()?;
            let mut activity = VecDeque::with_capacity(n as usize);
            for _ in 0..n {
                let at = d.i64()?;
                let (kind, exited_at) = match d.u8()? {
                    TRACK => (VisitorKind::Track, None),
                    PAGE => (VisitorKind::Page, None),
                    PAGE_EXITED => (VisitorKind::Page, Some(d.i64()?)),
                    _ => return Err(DecodeError("unknown activity kind")),
                };
                activity.push_back(Activity {
                    at,
                    kind,
                    exited_at,
                    detail: Value::Object(d.json()?),
                });
            }
            sessions.push_back(SessionInfo {
                id,
                started_at,
                last_seen,
                ended,
                pages_viewed,
                activity,
            });
        }
        let current_session = d.opt_uuid()?.map(SessionId);
        let n = d.u32()?;
        let actions = (0..n)
            .map(|_| d.uuid().map(ActionId))
            .collect::<Result<_, _>>()?;
        Ok(Customer {
            identity,
            user_id,
            visitor_id,
            sessions,
            current_session,
            actions,
            first_seen: d.i64()?,
            last_seen: d.i64()?,
            client: ClientInfo::default(),
            stamp: Seq(d.u64()?),
        })
    }
}

/// A customer's [`ClientInfo`], written after the customer only when it holds something
/// (snapshot format 2), so a snapshot of format 1, which never has it, reads as before.
impl ClientInfo {
    pub fn encode(&self, e: &mut Enc) {
        for software in [&self.browser, &self.os] {
            e.bool(software.is_some());
            if let Some(s) = software {
                e.str(&s.name);
                e.opt_str(s.version.as_deref());
            }
        }
        e.opt_str(self.country.as_deref());
        e.opt_str(self.city.as_deref());
        e.opt_str(self.timezone.as_deref());
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<ClientInfo, DecodeError> {
        let mut software = || -> Result<Option<Software>, DecodeError> {
            Ok(match d.bool()? {
                true => Some(Software {
                    name: d.str()?.to_owned(),
                    version: d.opt_str()?.map(str::to_owned),
                }),
                false => None,
            })
        };
        let (browser, os) = (software()?, software()?);
        Ok(ClientInfo {
            browser,
            os,
            country: d.opt_str()?.map(str::to_owned),
            city: d.opt_str()?.map(str::to_owned),
            timezone: d.opt_str()?.map(str::to_owned),
        })
    }
}

impl Profile {
    pub fn encode(&self, e: &mut Enc) {
        e.u32(self.user_ids.len() as u32);
        for u in self.user_ids.iter() {
            e.str(u.as_str());
        }
        e.u32(self.customers.len() as u32);
        for c in &self.customers {
            e.uuid(c.0);
        }
        e.json(&self.traits);
        e.json(&self.channels);
        e.u64(self.stamp.0);
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Profile, DecodeError> {
        let n = d.u32()?;
        let user_ids: Vec<UserId> = (0..n)
            .map(|_| d.str().map(UserId::from))
            .collect::<Result<_, _>>()?;
        let n = d.u32()?;
        let customers = (0..n)
            .map(|_| d.uuid().map(CustomerId))
            .collect::<Result<_, _>>()?;
        Ok(Profile {
            user_ids: user_ids.into(),
            customers,
            traits: d.json()?,
            channels: d.json()?,
            company: None,
            stamp: Seq(d.u64()?),
        })
    }
}

/// A profile's company, written after the profile only when it has one (snapshot format
/// 3), so a profile of an older format reads as before.
pub fn encode_membership(company: &CompanyId, e: &mut Enc) {
    e.str(company.as_str());
}

pub fn decode_membership(d: &mut Dec<'_>) -> Result<CompanyId, DecodeError> {
    Ok(CompanyId::from(d.str()?))
}

impl Company {
    pub fn encode(&self, id: &CompanyId, e: &mut Enc) {
        e.str(id.as_str());
        e.opt_str(self.name.as_deref());
        e.json(&self.attributes);
        e.u64(self.visitor_count);
        e.i64(self.first_seen);
        e.i64(self.last_seen);
        e.u64(self.stamp.0);
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<(CompanyId, Company), DecodeError> {
        let id = CompanyId::from(d.str()?);
        Ok((
            id,
            Company {
                name: d.opt_str()?.map(str::to_owned),
                attributes: d.json()?,
                visitor_count: d.u64()?,
                first_seen: d.i64()?,
                last_seen: d.i64()?,
                stamp: Seq(d.u64()?),
            },
        ))
    }
}

impl Action {
    pub fn encode(&self, e: &mut Enc) {
        let l = &self.latest;
        e.uuid(l.action_id.0);
        e.str(l.state.as_str());
        e.str(l.media.as_str());
        e.uuid(l.action_map_id.0);
        e.u32(l.action_map_version);
        e.uuid(l.customer_id.0);
        e.uuid(l.session_id.0);
        e.bool(l.error_code.is_some());
        e.i64(l.error_code.unwrap_or(0));
        e.opt_str(l.error_message.as_deref());
        e.opt_str(l.event_id.as_deref());
        e.bool(l.data.is_some());
        if let Some(data) = &l.data {
            e.str(data.as_str());
        }
        e.u32(self.transitions.len() as u32);
        for t in &self.transitions {
            e.str(t.state.as_str());
            e.u64(t.seq.0);
            e.i64(t.timestamp);
        }
    }

    pub fn decode(d: &mut Dec<'_>) -> Result<Action, DecodeError> {
        let action_id = ActionId(d.uuid()?);
        let state = action_state(d)?;
        let media = media(d)?;
        let action_map_id = ActionMapId(d.uuid()?);
        let action_map_version = d.u32()?;
        let customer_id = CustomerId(d.uuid()?);
        let session_id = SessionId(d.uuid()?);
        let has_code = d.bool()?;
        let code = d.i64()?;
        let latest = LifecycleEvent {
            action_id,
            state,
            media,
            action_map_id,
            action_map_version,
            customer_id,
            session_id,
            error_code: has_code.then_some(code),
            error_message: d.opt_str()?.map(str::to_string),
            event_id: d.opt_str()?.map(str::to_string),
            data: match d.bool()? {
                true => Some(
                    EventData::from_written(d.str()?)
                        .ok_or(DecodeError("a JSON field is not an object"))?,
                ),
                false => None,
            },
        };
        let n = d.u32()?;
        if n == 0 {
            return Err(DecodeError("an action without transitions"));
        }
        let transitions = (0..n)
            .map(|_| {
                Ok(Transition {
                    state: action_state(d)?,
                    seq: Seq(d.u64()?),
                    timestamp: d.i64()?,
                })
            })
            .collect::<Result<_, DecodeError>>()?;
        Ok(Action {
            latest,
            transitions,
        })
    }
}
