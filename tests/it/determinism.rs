//! A deterministic core (issue 12): what the sequencer commits is a function of the state,
//! the input and the time that comes with it.
//!
//! A random sequence of inputs (valid and invalid events of every kind for a few
//! customers, sessions and actions; identify (by user id and by channel ids, which two
//! customers often claim alike), sign-in and sign-out; page views with the client info
//! the edge stamps and a time zone; visitor changes and
//! merges; ticks that end idle sessions and age out actions and customers; snapshots) is
//! fed with explicit times to two fresh hubs. They must answer every input alike and end
//! with the same retained history and byte-identical state dumps (a snapshot's body, the
//! complete encoding of the state). A hub rebuilt from the first one's data directory (its
//! snapshots and write-ahead log, through `recovery::recover`) must end with the same dump.
//!
//! The first hub sometimes ticks while a snapshot is being written and sometimes writes a
//! real one into its data directory, so a snapshot can neither change what a tick does
//! nor hide a change from the rebuild. The hubs run in-process (`actionhub::hub::Hub` over
//! the real WAL on a temp dir): only in-process can an input carry its time.

use std::sync::Arc;

use actionhub::clock::Millis;
use actionhub::hub::{AdminChange, Hub, Pipeline};
use actionhub::ids::{Seq, VisitorId};
use actionhub::ingest::event::Event;
use actionhub::store::codec::Dec;
use actionhub::store::{recovery, snapshot};
use actionhub::Config;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

/// Cases per run: each starts three hubs on temp dirs, so a few dozen keep it to seconds.
const CASES: u32 = 48;
const MAX_INPUTS: usize = 70;

/// Few of each, so inputs meet: the same action reported twice, a session replaced, a
/// user id that two customers identify as.
const CUSTOMERS: usize = 3;
const SESSIONS: usize = 3;
const ACTIONS: usize = 6;
const USERS: usize = 3;
/// Channels and ids on each: few, so two customers often claim the same one.
const CHANNELS: [&str; 2] = ["telegram", "whatsapp"];
const CHANNEL_IDS: usize = 3;
const EVENT_IDS: usize = 3;

/// The test's clock starts here (2026-01-01) and only moves forward with the inputs.
const START: Millis = 1_767_225_600_000;

/// Short ages, so a run of inputs crosses each of them several times.
fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::ephemeral(dir);
    config.session_idle_timeout = std::time::Duration::from_secs(30);
    config.retention_age = std::time::Duration::from_secs(90);
    config.visitor_idle_age = std::time::Duration::from_secs(180);
    config
}

/// A UUIDv4 that names the `n`th id of a kind, the same in every case.
fn id(kind: u16, n: usize) -> String {
    format!("00000000-0000-4000-8{kind:03x}-{n:012x}")
}

fn customer(n: usize) -> String {
    id(1, n)
}

/// The media types, action maps and customer of an action unless an input says otherwise.
const MEDIA: [&str; 2] = ["webchat", "contentoffer"];

/// Every state and one no media type has; `offered` most, so sessions often end with
/// several actions still offered, which the hub then ignores in an order it must define.
fn state() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        6 => Just("offered"),
        2 => Just("qualified"),
        2 => Just("accepted"),
        1 => prop::sample::select(&[
            "rejected", "ignored", "timedout", "errored", "started", "engaged", "ended",
            "unknown",
        ][..]),
    ]
}

/// The session an event names: mostly its customer's own (the `n`th customer's is the
/// `n`th session), so actions gather in one session; sometimes another, which replaces it.
#[derive(Clone, Copy, Debug)]
enum Session {
    Own,
    Other(usize),
    Without,
}

impl Session {
    fn id(self, customer: usize) -> Option<String> {
        match self {
            Session::Own => Some(id(2, customer)),
            Session::Other(n) => Some(id(2, n)),
            Session::Without => None,
        }
    }
}

const VISITOR_KINDS: [&str; 8] = [
    "identify", "signin", "signout", "userinfo", "page", "track", "update", "exit",
];

/// What the edge stamps on page events as `client`, with the time zone the page sends: a
/// full one and a partial one, so a later page view keeps what an earlier one said.
static CLIENTS: std::sync::LazyLock<[(Value, &str); 2]> = std::sync::LazyLock::new(|| {
    [
        (
            json!({"browser": {"name": "Chrome", "version": "120.0"},
                   "os": {"name": "Windows 10"}, "country": "DE", "city": "Berlin"}),
            "Europe/Berlin",
        ),
        (json!({"browser": {"name": "Firefox"}}), "America/New_York"),
    ]
});

/// One event as published, valid or not.
#[derive(Clone, Debug)]
enum Published {
    Lifecycle {
        action: usize,
        state: &'static str,
        /// Another customer, media type or map than the action's own: refused once the
        /// action exists (those fields may not change).
        customer: Option<usize>,
        media: Option<usize>,
        map: Option<usize>,
        session: Session,
        event_id: Option<usize>,
    },
    Visitor {
        kind: &'static str,
        customer: usize,
        session: Session,
        user: usize,
        traits: Option<(usize, u8)>,
        /// A channel id (on a channel of [`CHANNELS`]) the event claims; an identify
        /// with one may come without a user id. On events that do not link a visitor it
        /// is refused.
        channel: Option<(usize, usize)>,
        without_user: bool,
        event_id: Option<usize>,
        /// One of [`CLIENTS`] as the edge would stamp it, with its page's time zone; on
        /// events other than page views it is refused.
        client: Option<usize>,
    },
    /// Refused before it reaches the sequencer.
    Malformed,
}

impl Published {
    fn to_json(&self) -> Value {
        match self {
            Published::Lifecycle {
                action,
                state,
                customer: other_customer,
                media,
                map,
                session,
                event_id,
            } => {
                let owner = other_customer.unwrap_or(action % CUSTOMERS);
                let mut e = json!({
                    "actionId": id(3, *action),
                    "actionState": state,
                    "actionMediaType": MEDIA[media.unwrap_or(action % 2)],
                    "actionMapId": id(4, map.unwrap_or(action % 2)),
                    "actionMapVersion": 1,
                    "customerId": customer(owner),
                });
                if let Some(session) = session.id(owner) {
                    e["sessionId"] = json!(session);
                }
                if let Some(n) = event_id {
                    e["eventId"] = json!(format!("e{n}"));
                }
                e
            }
            Published::Visitor {
                kind,
                customer: c,
                session,
                user,
                traits,
                channel,
                without_user,
                event_id,
                client,
            } => {
                let mut e = json!({"type": kind, "customerId": customer(*c)});
                if let Some(session) = session.id(*c) {
                    e["sessionId"] = json!(session);
                }
                match *kind {
                    "identify" | "signin" | "userinfo" => e["userId"] = json!(format!("u{user}")),
                    "page" | "exit" => {
                        e["page"] = json!({"url": format!("https://shop.example/{user}")})
                    }
                    "update" => e["attributes"] = json!({ format!("a{user}"): user }),
                    "track" => e["name"] = json!("clicked"),
                    _ => {}
                }
                if let Some((key, value)) = traits {
                    e["traits"] = json!({ format!("t{key}"): value });
                }
                // Companies joined, replaced and left: refused where events may not set one.
                if user % 2 == 0 {
                    e["company"] = json!({"id": format!("co{}", user % 3), "name": kind});
                }
                if let Some((name, n)) = channel {
                    e["channels"] = json!({ CHANNELS[*name]: format!("c{n}") });
                }
                if *without_user {
                    e.as_object_mut().expect("an object").remove("userId");
                }
                if let Some(n) = event_id {
                    e["eventId"] = json!(format!("v{n}"));
                }
                if let Some(n) = client {
                    let (client, timezone) = &CLIENTS[*n];
                    e["client"] = client.clone();
                    if e["page"].is_object() {
                        e["page"]["timezone"] = json!(timezone);
                    }
                }
                e
            }
            Published::Malformed => json!({"type": "page", "customerId": "not-a-uuid"}),
        }
    }
}

#[derive(Clone, Debug)]
enum Change {
    Traits(usize, u8),
    Anonymize,
    Delete,
}

/// One input, applied after the clock moved on by `advance` ms.
#[derive(Clone, Debug)]
enum Input {
    Publish(Vec<Published>),
    Administer {
        visitor: usize,
        change: Change,
    },
    Merge {
        source: usize,
        target: usize,
    },
    Tick,
    /// The first hub ticks while a snapshot is being written; the second just ticks.
    TickDuringSnapshot,
    /// The first hub writes a snapshot into its data directory, which the rebuild starts
    /// from.
    Snapshot,
}

fn sometimes<T: std::fmt::Debug + Clone>(
    value: impl Strategy<Value = T>,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![6 => Just(None), 1 => value.prop_map(Some)]
}

fn session() -> impl Strategy<Value = Session> {
    prop_oneof![
        8 => Just(Session::Own),
        2 => (0..SESSIONS).prop_map(Session::Other),
        1 => Just(Session::Without),
    ]
}

fn published() -> impl Strategy<Value = Published> {
    let lifecycle = (
        0..ACTIONS,
        state(),
        sometimes(0..CUSTOMERS),
        sometimes(0..MEDIA.len()),
        sometimes(0..2usize),
        session(),
        prop::option::of(0..EVENT_IDS),
    )
        .prop_map(|(action, state, customer, media, map, session, event_id)| {
            Published::Lifecycle {
                action,
                state,
                customer,
                media,
                map,
                session,
                event_id,
            }
        });
    let visitor = (
        prop::sample::select(&VISITOR_KINDS[..]),
        0..CUSTOMERS,
        session(),
        0..USERS,
        prop::option::of((0..3usize, any::<u8>())),
        prop::option::of((0..CHANNELS.len(), 0..CHANNEL_IDS)),
        prop::bool::weighted(0.3),
        prop::option::of(0..EVENT_IDS),
        prop::option::of(0..CLIENTS.len()),
    )
        .prop_map(
            |(kind, customer, session, user, traits, channel, without_user, event_id, client)| {
                Published::Visitor {
                    kind,
                    customer,
                    session,
                    user,
                    traits,
                    channel,
                    without_user,
                    event_id,
                    client,
                }
            },
        );
    prop_oneof![10 => lifecycle, 8 => visitor, 1 => Just(Published::Malformed)]
}

fn input() -> impl Strategy<Value = Input> {
    let change = prop_oneof![
        3 => (0..3usize, any::<u8>()).prop_map(|(k, v)| Change::Traits(k, v)),
        1 => Just(Change::Anonymize),
        1 => Just(Change::Delete),
    ];
    prop_oneof![
        20 => prop::collection::vec(published(), 1..4).prop_map(Input::Publish),
        2 => (0..CUSTOMERS, change).prop_map(|(visitor, change)| Input::Administer { visitor, change }),
        2 => (0..CUSTOMERS, 0..CUSTOMERS).prop_map(|(source, target)| Input::Merge { source, target }),
        4 => Just(Input::Tick),
        2 => Just(Input::TickDuringSnapshot),
        1 => Just(Input::Snapshot),
    ]
}

/// Mostly a moment, sometimes long enough for sessions to idle and actions to age out.
fn advance() -> impl Strategy<Value = Millis> {
    prop_oneof![4 => 0..3_000i64, 1 => 0..120_000i64]
}

/// A hub over the real WAL in `dir`, recovered from whatever the directory holds.
fn open(dir: &std::path::Path) -> (Arc<Hub>, Pipeline) {
    let config = config(dir);
    let (restored, wal) = recovery::recover(&config).expect("recovers");
    Hub::start_restored(Arc::new(config), Box::new(wal), restored)
}

fn stop(hub: &Hub, pipeline: Pipeline) {
    hub.close_pipeline();
    pipeline.join();
}

/// Feeds one input to a hub at `now`; returns its answer, to compare with the other hub's.
async fn feed(hub: &Hub, input: &Input, now: Millis, first: bool, dir: &std::path::Path) -> String {
    match input {
        Input::Publish(events) => {
            let events = events
                .iter()
                .map(|e| Event::from_json(e.to_json()))
                .collect();
            format!("{:?}", hub.publish_at(events, now).await)
        }
        Input::Administer { visitor, change } => {
            let Some(visitor) = resolve(hub, *visitor) else {
                return "no such visitor".into();
            };
            let change = match change {
                Change::Traits(key, value) => {
                    let mut traits = Map::new();
                    traits.insert(format!("t{key}"), json!(value));
                    // Every third one moves the visitor to a company too.
                    let company = (value % 3 == 0)
                        .then(|| json!({"id": format!("co{key}")}).as_object().cloned())
                        .flatten();
                    AdminChange::UpdateTraits { traits, company }
                }
                Change::Anonymize => AdminChange::Anonymize,
                Change::Delete => AdminChange::Delete,
            };
            format!("{:?}", hub.administer_at(visitor, change, now).await)
        }
        Input::Merge { source, target } => {
            let (Some(source), Some(target)) = (resolve(hub, *source), resolve(hub, *target))
            else {
                return "no such visitor".into();
            };
            format!("{:?}", hub.merge_visitors_at(source, target, now).await)
        }
        Input::Tick => {
            hub.sweep_at(now);
            "ticked".into()
        }
        Input::TickDuringSnapshot => {
            if first {
                let _ = hub.begin_snapshot();
                hub.sweep_at(now);
                hub.state().end_snapshot();
            } else {
                hub.sweep_at(now);
            }
            "ticked".into()
        }
        Input::Snapshot => {
            if first {
                snapshot::take(hub, dir).expect("a snapshot is written");
            }
            "snapshot".into()
        }
    }
}

/// The visitor a customer belongs to, as the visitor API resolves it.
fn resolve(hub: &Hub, n: usize) -> Option<VisitorId> {
    hub.state()
        .resolve_visitor(&customer(n))
        .expect("a well-formed id")
}

/// The state as a snapshot encodes it, written to a scratch directory: the body after the
/// header's seq, epoch and time of writing (which differ between hubs), without the
/// checksum. Also the seq it is as of.
fn dump(hub: &Hub) -> (Seq, Vec<u8>) {
    let scratch = tempfile::tempdir().expect("temp dir");
    let written = snapshot::take(hub, scratch.path()).expect("a dump is written");
    let (_, path) = snapshot::list(scratch.path())
        .expect("snapshots listed")
        .into_iter()
        .next()
        .expect("the dump");
    let bytes = std::fs::read(path).expect("the dump reads back");
    // Magic and version (12 bytes), then seq, the visitor changes after it it holds (a
    // place in the log, not state: a rebuilt hub has logged none), epoch and the time
    // written.
    let mut header = Dec::new(&bytes[12..]);
    let seq = header.u64().expect("seq");
    header.u32().expect("changes after the seq");
    let epoch = header.str().expect("epoch");
    header.i64().expect("written at");
    let body_at = 12 + 8 + 4 + (4 + epoch.len()) + 8;
    assert_eq!(Seq(seq), written.seq);
    (written.seq, bytes[body_at..bytes.len() - 4].to_vec())
}

/// The visitor each channel id the inputs can claim names, if any.
fn channel_owners(hub: &Hub) -> Vec<Option<VisitorId>> {
    CHANNELS
        .iter()
        .flat_map(|name| (0..CHANNEL_IDS).map(move |n| (name, format!("c{n}"))))
        .map(|(name, id)| hub.state().visitor_by_channel(name, &id))
        .collect()
}

/// Every retained record: seq, time and frame.
fn history(hub: &Hub) -> Vec<(Seq, Millis, String)> {
    let (records, _) =
        hub.with_history(|h| h.scan(Seq(0), Seq(u64::MAX), usize::MAX, usize::MAX, |_| true));
    records
        .iter()
        .map(|r| (r.seq, r.timestamp, r.frame.as_str().to_owned()))
        .collect()
}

/// Where two dumps first differ, for a message a reader can act on.
fn first_difference(a: &[u8], b: &[u8]) -> Option<String> {
    if a == b {
        return None;
    }
    let at = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    Some(format!(
        "{} bytes against {}, first difference at byte {at}",
        a.len(),
        b.len()
    ))
}

fn run(inputs: &[(Millis, Input)]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let (one_dir, two_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, one_pipeline) = open(one_dir.path());
    let (two, two_pipeline) = open(two_dir.path());
    let mut now = START;
    for (step, (advance, input)) in inputs.iter().enumerate() {
        now += advance;
        let (a, b) = runtime.block_on(async {
            (
                feed(&one, input, now, true, one_dir.path()).await,
                feed(&two, input, now, false, two_dir.path()).await,
            )
        });
        prop_assert_eq!(
            a,
            b,
            "the hubs answered input {} ({:?}) differently",
            step,
            input
        );
    }
    let (one_seq, one_dump) = dump(&one);
    let (two_seq, two_dump) = dump(&two);
    prop_assert_eq!(one_seq, two_seq, "the hubs are at different seqs");
    if let Some(diff) = first_difference(&one_dump, &two_dump) {
        prop_assert!(false, "two hubs fed the same inputs differ: {}", diff);
    }
    prop_assert!(
        history(&one) == history(&two),
        "the retained histories differ"
    );
    // The channel index is not in a dump (it is rebuilt from the profiles): its answers are
    // compared instead.
    prop_assert_eq!(channel_owners(&one), channel_owners(&two));
    stop(&one, one_pipeline);
    stop(&two, two_pipeline);

    let (rebuilt, rebuilt_pipeline) = open(one_dir.path());
    let (_, rebuilt_dump) = dump(&rebuilt);
    let rebuilt_owners = channel_owners(&rebuilt);
    stop(&rebuilt, rebuilt_pipeline);
    if let Some(diff) = first_difference(&one_dump, &rebuilt_dump) {
        prop_assert!(
            false,
            "the hub rebuilt from its data directory differs from the live one: {}",
            diff
        );
    }
    prop_assert_eq!(
        channel_owners(&one),
        rebuilt_owners,
        "the rebuilt hub's channel index differs"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_same_inputs_at_the_same_times_make_the_same_state(
        inputs in prop::collection::vec((advance(), input()), 1..MAX_INPUTS)
    ) {
        run(&inputs)?;
    }
}

/// A visitor event of `kind` for customer `customer` in its own session, as user `user`.
fn identity(kind: &'static str, customer: usize, user: usize) -> Input {
    Input::Publish(vec![Published::Visitor {
        kind,
        customer,
        session: Session::Own,
        user,
        traits: None,
        channel: None,
        without_user: false,
        event_id: None,
        client: None,
    }])
}

fn offered(action: usize) -> Input {
    Input::Publish(vec![Published::Lifecycle {
        action,
        state: "offered",
        customer: None,
        media: None,
        map: None,
        session: Session::Own,
        event_id: None,
    }])
}

/// Found by the property above: a customer that identifies again after its whole profile
/// was erased.
#[test]
fn identifying_again_after_an_erasure_links_a_new_profile() {
    let inputs = [
        (0, identity("identify", 2, 0)),
        (0, offered(0)),
        (91_819, identity("identify", 0, 0)),
        (
            86_863,
            Input::Merge {
                source: 0,
                target: 0,
            },
        ),
        (600, identity("identify", 0, 1)),
        (719, Input::Tick),
        (0, offered(0)),
        (0, identity("identify", 2, 2)),
        (
            0,
            Input::Administer {
                visitor: 2,
                change: Change::Delete,
            },
        ),
        (0, identity("identify", 0, 0)),
    ];
    run(&inputs).unwrap();
}

/// Found by the property above: a rebuild replays the visitor changes logged at the
/// snapshot's seq, and an attribute update replayed after its visitor was forgotten there
/// must not bring the profile back.
#[test]
fn an_update_replayed_after_its_visitor_was_forgotten_leaves_no_profile() {
    let inputs = [
        (0, identity("identify", 0, 0)),
        (
            0,
            Input::Publish(vec![Published::Lifecycle {
                action: 0,
                state: "qualified",
                customer: None,
                media: None,
                map: None,
                session: Session::Own,
                event_id: None,
            }]),
        ),
        (57_722, Input::Tick),
        (
            2_792,
            Input::Administer {
                visitor: 0,
                change: Change::Traits(0, 0),
            },
        ),
        (119_487, Input::Tick),
        (0, Input::Snapshot),
    ];
    run(&inputs).unwrap();
}

/// Found by the property above: a visitor erased before a snapshot, then identified again
/// with a channel id and merged into another visitor after it. The rebuild must find the
/// channel id where the live hub does.
#[test]
fn a_channel_claimed_after_an_erasure_and_merged_is_found_after_a_rebuild() {
    let lifecycle = |action, state, customer| Published::Lifecycle {
        action,
        state,
        customer,
        media: None,
        map: None,
        session: Session::Own,
        event_id: None,
    };
    let inputs = [
        (0, Input::Publish(vec![lifecycle(0, "offered", Some(1))])),
        (29_458, offered(2)),
        (543, Input::Tick),
        (
            66_444,
            Input::Merge {
                source: 2,
                target: 1,
            },
        ),
        (113_557, Input::Tick),
        (0, offered(4)),
        (
            0,
            Input::Administer {
                visitor: 1,
                change: Change::Traits(0, 115),
            },
        ),
        (
            177,
            Input::Administer {
                visitor: 1,
                change: Change::Delete,
            },
        ),
        (2_527, Input::Snapshot),
        (
            2_662,
            Input::Publish(vec![
                lifecycle(1, "qualified", Some(2)),
                Published::Visitor {
                    kind: "identify",
                    customer: 1,
                    session: Session::Own,
                    user: 1,
                    traits: None,
                    channel: Some((1, 1)),
                    without_user: false,
                    event_id: Some(0),
                    client: None,
                },
            ]),
        ),
        (
            2_494,
            Input::Merge {
                source: 1,
                target: 2,
            },
        ),
    ];
    run(&inputs).unwrap();
}
