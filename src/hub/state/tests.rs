//! The fold, the copy-on-write walk and the snapshot encoding, tested together on one
//! deterministic mix of events.

use super::*;
use crate::ids::ChannelUserId;
use crate::ingest::event::{Body, EndReason, Event, Published};
use crate::store::codec::{Dec, Enc};

/// A deterministic mix of every kind of change: new customers and sessions, actions
/// moving through states, sign-ins that merge profiles, traits, sessions ending.
fn events(n: u64) -> Vec<Published> {
    let customers: Vec<CustomerId> = (0..12).map(|_| CustomerId::new_random()).collect();
    let sessions: Vec<SessionId> = (0..12).map(|_| SessionId::new_random()).collect();
    let actions: Vec<ActionId> = (0..30).map(|_| ActionId::new_random()).collect();
    let map = ActionMapId::new_random();
    let states = ["offered", "accepted", "started", "engaged", "ended"];
    (1..=n)
        .map(|seq| {
            let i = (seq * 7919 % 1000) as usize;
            let (c, s) = (i % 12, (i / 12) % 12);
            let body = match seq % 6 {
                0 => Body::SessionStarted {
                    customer_id: customers[c],
                    session_id: sessions[s],
                    user_id: None,
                    started_at: seq as i64,
                },
                1 | 2 => {
                    let a = i % 30;
                    let json = serde_json::json!({
                        "actionId": actions[a].to_string(),
                        "actionState": states[(seq as usize / 6) % 5],
                        "actionMediaType": "webchat",
                        "actionMapId": map.to_string(), "actionMapVersion": 1,
                        "customerId": customers[a % 12].to_string(),
                        "sessionId": sessions[s].to_string(),
                        "data": {"n": seq},
                    });
                    Event::from_json(json).unwrap().into()
                }
                3 => {
                    let mut json = serde_json::json!({
                        "type": if seq % 4 == 0 { "identify" } else { "signin" },
                        "customerId": customers[c].to_string(),
                        "sessionId": sessions[s].to_string(),
                        "userId": format!("user-{}", i % 5),
                        "traits": {"seen": seq},
                    });
                    // Channel ids too, some through channels alone: claims that meet.
                    match i % 3 {
                        0 => {
                            json["channels"] =
                                serde_json::json!({"whatsapp": format!("w{}", i % 4)})
                        }
                        1 if seq % 4 == 0 => {
                            json.as_object_mut().unwrap().remove("userId");
                            json["channels"] =
                                serde_json::json!({"telegram": format!("t{}", i % 3)});
                        }
                        _ => {}
                    }
                    // Companies joined and left again as profiles fold.
                    if i.is_multiple_of(2) {
                        json["company"] = serde_json::json!({
                            "id": format!("co-{}", i % 3), "name": format!("Co {seq}"),
                            "size": seq,
                        });
                    }
                    Event::from_json(json).unwrap().into()
                }
                4 if i.is_multiple_of(3) => Event::from_json(serde_json::json!({
                    "type": "update", "customerId": customers[c].to_string(),
                    "attributes": {"plan": seq}, "company": {"id": format!("co-{}", i % 4)},
                }))
                .unwrap()
                .into(),
                4 if i % 3 == 1 => Event::from_json(serde_json::json!({
                    "type": "exit", "customerId": customers[c].to_string(),
                    "sessionId": sessions[s].to_string(), "page": {"url": "https://x/"},
                }))
                .unwrap()
                .into(),
                4 => Event::from_json(serde_json::json!({
                    "type": "page", "customerId": customers[c].to_string(),
                    "sessionId": sessions[s].to_string(), "page": {"url": "https://x/"},
                }))
                .unwrap()
                .into(),
                _ => Body::SessionEnded {
                    customer_id: customers[c],
                    session_id: sessions[s],
                    user_id: None,
                    started_at: 0,
                    ended_at: seq as i64,
                    pages_viewed: 1,
                    reason: EndReason::Idle,
                },
            };
            Published {
                seq: Seq(seq),
                timestamp: seq as i64 * 10,
                body,
            }
        })
        .collect()
}

/// Everything in a state, comparable.
fn fingerprint(state: &HubState) -> Vec<String> {
    let mut out: Vec<String> = state
        .customers
        .iter()
        .map(|e| format!("c {:?} {:?}", e.key(), *e))
        .chain(
            state
                .profiles
                .iter()
                .map(|e| format!("p {:?} {:?}", e.key(), *e)),
        )
        .chain(state.actions.iter().map(|e| format!("a {:?}", *e)))
        .chain(
            state
                .companies
                .iter()
                .map(|e| format!("co {:?} {:?}", e.key(), *e)),
        )
        .chain(
            state
                .users
                .iter()
                .map(|e| format!("u {} {:?}", e.key(), *e)),
        )
        .chain(
            state
                .channel_index()
                .into_iter()
                .map(|(id, v)| format!("ch {id} {v:?}")),
        )
        .collect();
    out.sort();
    out.push(format!("{:?}", *state.maps.lock()));
    out
}

#[test]
fn a_snapshot_holds_the_state_as_of_its_seq_while_changes_go_on() {
    let all = events(600);
    for split in [0, 1, 250, 599] {
        let (before, after) = all.split_at(split);
        let expected = HubState::default();
        let live = HubState::default();
        for p in before {
            expected.apply(p);
            live.apply(p);
        }
        let maps = live.begin_snapshot(Seq(split as u64));
        let mut pending = after.iter();
        let (mut customers, mut profiles, mut actions) = (Vec::new(), Vec::new(), Vec::new());
        let mut companies = Vec::new();
        // Apply two later events between every entity the walk hands out.
        live.walk_snapshot(&mut |item| {
            match item {
                SnapshotItem::Customer(id, c) => customers.push((id, c.clone())),
                SnapshotItem::Profile(id, p) => profiles.push((id, p.clone())),
                SnapshotItem::Action(a) => actions.push(a.clone()),
                SnapshotItem::Company(id, c) => companies.push((id.clone(), c.clone())),
                SnapshotItem::Segments(..) => unreachable!("no segments here"),
            }
            for p in pending.by_ref().take(2) {
                live.apply(p);
            }
            Ok::<(), ()>(())
        })
        .unwrap();
        live.end_snapshot();
        for p in pending {
            live.apply(p);
        }
        let restored = HubState::restoring(maps, 0);
        for (id, c) in customers {
            restored.restore_customer(id, c);
        }
        for (id, p) in profiles {
            restored.restore_profile(id, p);
        }
        for a in actions {
            restored.restore_action(a);
        }
        for (id, c) in companies {
            restored.restore_company(id, c);
        }
        assert_eq!(
            fingerprint(&restored),
            fingerprint(&expected),
            "split {split}"
        );
        let whole = HubState::default();
        for p in &all {
            whole.apply(p);
        }
        assert_eq!(
            fingerprint(&live),
            fingerprint(&whole),
            "the live state moved on"
        );
    }
}

#[test]
fn entities_encode_and_decode_unchanged() {
    let state = HubState::default();
    for p in events(300) {
        state.apply(&p);
    }
    let mut e = Enc::default();
    for c in state.customers.iter() {
        c.encode(&mut e);
    }
    for p in state.profiles.iter() {
        p.encode(&mut e);
        if let Some(company) = &p.company {
            super::encode_membership(company, &mut e);
        }
    }
    for a in state.actions.iter() {
        a.encode(&mut e);
    }
    for c in state.companies.iter() {
        c.encode(c.key(), &mut e);
    }
    let mut d = Dec::new(&e.buf);
    for c in state.customers.iter() {
        assert_eq!(
            format!("{:?}", Customer::decode(&mut d).unwrap()),
            format!("{:?}", *c)
        );
    }
    for p in state.profiles.iter() {
        let mut decoded = Profile::decode(&mut d).unwrap();
        if p.company.is_some() {
            decoded.company = Some(super::decode_membership(&mut d).unwrap());
        }
        assert_eq!(format!("{decoded:?}"), format!("{:?}", *p));
    }
    for a in state.actions.iter() {
        assert_eq!(
            format!("{:?}", Action::decode(&mut d).unwrap()),
            format!("{:?}", *a)
        );
    }
    assert!(!state.companies.is_empty(), "the events name companies");
    for c in state.companies.iter() {
        let (id, company) = super::Company::decode(&mut d).unwrap();
        assert_eq!((&id, &company), (c.key(), c.value()));
    }
    assert!(d.is_empty());
}

/// The snapshot bytes of a customer and a profile that hold a user id and a visitor id,
/// spelled out field by field: naming those ids (`UserId`, `VisitorId`) must not change the
/// snapshot format.
#[test]
fn identity_fields_encode_as_pinned() {
    let visitor = uuid::Uuid::from_u128(0xeeee_eeee_eeee_4eee_8eee_eeee_eeee_eeee);
    let customer = uuid::Uuid::from_u128(0xcccc_cccc_cccc_4ccc_8ccc_cccc_cccc_cccc);
    let c = Customer {
        identity: IdentityState::Authenticated,
        user_id: Some(UserId::from("u1")),
        visitor_id: Some(VisitorId(visitor)),
        sessions: Default::default(),
        current_session: None,
        actions: Vec::new(),
        first_seen: 1,
        last_seen: 2,
        client: Default::default(),
        stamp: Seq(3),
    };
    let p = Profile {
        user_ids: Arc::from(vec![UserId::from("u1")]),
        customers: vec![CustomerId(customer)],
        traits: serde_json::json!({"plan": "pro"})
            .as_object()
            .unwrap()
            .clone(),
        channels: serde_json::Map::new(),
        company: None,
        stamp: Seq(4),
    };
    let text = |t: &str| [&(t.len() as u32).to_le_bytes()[..], t.as_bytes()].concat();
    let customer_bytes = [
        &[2u8][..], // identity: authenticated
        &[1],       // a user id follows
        &text("u1"),
        &[1], // a visitor id follows
        visitor.as_bytes(),
        &0u32.to_le_bytes(), // no sessions
        &[0],                // no open session
        &0u32.to_le_bytes(), // no actions
        &1i64.to_le_bytes(), // first seen
        &2i64.to_le_bytes(), // last seen
        &3u64.to_le_bytes(), // stamp
    ]
    .concat();
    let profile_bytes = [
        &1u32.to_le_bytes()[..], // one user id follows
        &text("u1"),
        &1u32.to_le_bytes(), // one customer follows
        customer.as_bytes(),
        &text(r#"{"plan":"pro"}"#), // traits
        &text("{}"),                // channels
        &4u64.to_le_bytes(),        // stamp
    ]
    .concat();
    let mut e = Enc::default();
    c.encode(&mut e);
    assert_eq!(e.buf, customer_bytes);
    let mut e = Enc::default();
    p.encode(&mut e);
    assert_eq!(e.buf, profile_bytes);
}

/// The channel index as the profiles define it: every (channel, id) pair a profile holds.
fn channels_of_profiles(state: &HubState) -> Vec<(ChannelUserId, VisitorId)> {
    let mut all: Vec<_> = state
        .profiles
        .iter()
        .flat_map(|p| {
            let visitor = *p.key();
            ChannelUserId::all_in(&p.channels)
                .map(|id| (id, visitor))
                .collect::<Vec<_>>()
        })
        .collect();
    all.sort();
    all
}

fn identify(customer: CustomerId, user: Option<&str>, channels: serde_json::Value) -> Body {
    let mut json = serde_json::json!({
        "type": "identify", "customerId": customer.to_string(), "channels": channels,
    });
    if let Some(user) = user {
        json["userId"] = user.into();
    }
    Event::from_json(json).unwrap().into()
}

fn applied(state: &HubState, seq: u64, body: Body) {
    state.apply(&Published {
        seq: Seq(seq),
        timestamp: seq as i64,
        body,
    });
}

#[test]
fn the_channel_index_is_exactly_the_profiles_channel_ids() {
    let state = HubState::default();
    for p in events(600) {
        state.apply(&p);
        let index = state.channel_index();
        assert_eq!(index, channels_of_profiles(&state), "after seq {}", p.seq);
        // A channel user id names at most one visitor.
        let mut ids: Vec<_> = index.iter().map(|(id, _)| id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), index.len());
    }
    assert!(
        !state.channel_index().is_empty(),
        "the mix holds channel ids"
    );
    // Every change that forgets a profile's channels takes them out of the index too.
    let visitors: Vec<VisitorId> = state.profiles.iter().map(|p| *p.key()).collect();
    let customers = |v: VisitorId| state.visitor_customers(v);
    let mut seq = 1000;
    for (n, visitor) in visitors.into_iter().enumerate() {
        let op = match n % 3 {
            0 => AdminOp::Anonymize {
                visitor_id: visitor,
                customer_ids: customers(visitor),
            },
            1 => AdminOp::Delete {
                visitor_id: visitor,
                customer_ids: customers(visitor),
            },
            _ => AdminOp::Evict {
                customer_ids: customers(visitor),
            },
        };
        seq += 1;
        state.apply_admin(&op, Seq(seq));
        assert_eq!(
            state.channel_index(),
            channels_of_profiles(&state),
            "{op:?}"
        );
    }
    assert!(state.channel_index().is_empty());
}

#[test]
fn a_second_claim_of_a_channel_id_merges_the_claimants() {
    let state = HubState::default();
    let (a, b, c) = (
        CustomerId::new_random(),
        CustomerId::new_random(),
        CustomerId::new_random(),
    );
    let whatsapp = ChannelUserId::new("whatsapp", "10435685475");
    // A visitor known only through a channel.
    applied(
        &state,
        1,
        identify(a, None, serde_json::json!({"whatsapp": "10435685475"})),
    );
    let first = state.channel_owner(&whatsapp).expect("indexed");
    assert_eq!(first, VisitorId::of_first_customer(a));
    assert_eq!(state.user_of(a), None);
    assert_eq!(state.identity_of(a), Some(IdentityState::Recognized));
    // Another customer, under a user id of its own, claims the same id: it is that person.
    // The user id's profile is the one both end in; the channel's folds into it.
    applied(
        &state,
        2,
        identify(b, Some("bob"), serde_json::json!({"telegram": "1"})),
    );
    let bob = VisitorId::of_first_customer(b);
    let preview = state.merge_preview(
        b,
        Some(&UserId::from("bob")),
        serde_json::json!({"whatsapp": "10435685475"}).as_object(),
    );
    assert_eq!(preview, Some((bob, vec![b, a])));
    applied(
        &state,
        3,
        identify(
            b,
            Some("bob"),
            serde_json::json!({"whatsapp": "10435685475"}),
        ),
    );
    assert_eq!(state.channel_owner(&whatsapp), Some(bob));
    assert_eq!(
        state.channel_owner(&ChannelUserId::new("telegram", "1")),
        Some(bob)
    );
    assert_eq!(state.visitor_customers(bob), vec![b, a]);
    assert_eq!(state.profile_of(a), Some(bob));
    assert_eq!(
        state.profiles.len(),
        1,
        "the first claimant's profile folded in"
    );
    // Claimed again through channels alone, the id's visitor is the target.
    let d = CustomerId::new_random();
    let linking = state.linking(
        d,
        None,
        serde_json::json!({"whatsapp": "10435685475"}).as_object(),
    );
    assert_eq!(
        linking,
        Linking {
            target: bob,
            exists: true,
            folds: vec![]
        }
    );
    // A user id's profile comes before a channel id's: `c`'s user id is the target.
    applied(
        &state,
        4,
        identify(c, Some("carol"), serde_json::json!({"viber": "v"})),
    );
    let carol = VisitorId::of_first_customer(c);
    let linking = state.linking(
        c,
        Some(&UserId::from("carol")),
        serde_json::json!({"whatsapp": "10435685475"}).as_object(),
    );
    assert_eq!(
        linking,
        Linking {
            target: carol,
            exists: true,
            folds: vec![bob]
        }
    );
    assert_eq!(channels_of_profiles(&state), state.channel_index());
}
