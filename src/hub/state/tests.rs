//! The fold, the copy-on-write walk and the snapshot encoding, tested together on one
//! deterministic mix of events.

use super::*;
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
                    let json = serde_json::json!({
                        "type": if seq % 4 == 0 { "identify" } else { "signin" },
                        "customerId": customers[c].to_string(),
                        "sessionId": sessions[s].to_string(),
                        "userId": format!("user-{}", i % 5),
                        "traits": {"seen": seq},
                    });
                    Event::from_json(json).unwrap().into()
                }
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
                .users
                .iter()
                .map(|e| format!("u {} {:?}", e.key(), *e)),
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
        // Apply two later events between every entity the walk hands out.
        live.walk_snapshot(&mut |item| {
            match item {
                SnapshotItem::Customer(id, c) => customers.push((id, c.clone())),
                SnapshotItem::Profile(id, p) => profiles.push((id, p.clone())),
                SnapshotItem::Action(a) => actions.push(a.clone()),
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
    }
    for a in state.actions.iter() {
        a.encode(&mut e);
    }
    let mut d = Dec::new(&e.buf);
    for c in state.customers.iter() {
        assert_eq!(
            format!("{:?}", Customer::decode(&mut d).unwrap()),
            format!("{:?}", *c)
        );
    }
    for p in state.profiles.iter() {
        assert_eq!(
            format!("{:?}", Profile::decode(&mut d).unwrap()),
            format!("{:?}", *p)
        );
    }
    for a in state.actions.iter() {
        assert_eq!(
            format!("{:?}", Action::decode(&mut d).unwrap()),
            format!("{:?}", *a)
        );
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
