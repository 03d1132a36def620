//! The sweeper's lease: one node at a time proposes the ticks that end idle sessions and
//! age state out, writes the shared snapshots (see [`super::snapshots`]) and delivers the
//! webhook sinks (see [`super::sinks`]).
//!
//! The lease is a key in a JetStream key-value bucket whose entries live [`LEASE_TTL`]:
//! the holder writes it again every third of that (an update that names the revision it
//! last wrote, so two nodes can never both renew), and a node that finds it gone creates
//! it. A dead holder's lease lapses within the TTL and another node's next attempt takes
//! it, so idle sessions still end on time. Two holders for a moment (a paused holder
//! waking up after its lease moved) is harmless: a tick decides from the state and the
//! stream's time alone, so a second one in a row finds nothing left to do.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::Context;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::snapshots::Snapshots;
use crate::cluster::ClusterError;
use crate::config::Config;
use crate::hub::Hub;

/// How long a lease lives without being renewed.
pub(super) const LEASE_TTL: Duration = Duration::from_secs(10);
const KEY: &str = "sweeper";

/// The lease's bucket: `<stream>-lease`, made when missing.
pub(super) async fn bucket(js: &Context, config: &Config) -> Result<Store, ClusterError> {
    let name = format!("{}-lease", config.nats_stream);
    if let Ok(store) = js.get_key_value(&name).await {
        return Ok(store);
    }
    let wanted = kv::Config {
        bucket: name.clone(),
        description: "which actionhub node proposes the sweeper's ticks".into(),
        history: 1,
        max_age: LEASE_TTL,
        num_replicas: config.nats_replicas,
        ..Default::default()
    };
    match js.create_key_value(wanted).await {
        Ok(store) => Ok(store),
        // Another node may have made it meanwhile.
        Err(created) => js
            .get_key_value(&name)
            .await
            .map_err(|found| ClusterError::Unreachable {
                what: format!("the lease bucket {name}"),
                problem: format!("finding it: {found}; creating it: {created}"),
            }),
    }
}

/// Holds the lease when it can and, while it does, proposes a tick every sweep interval
/// and asks for a shared snapshot every snapshot interval, until `stop`; then gives the
/// lease up, so another node takes it at once.
pub(super) async fn run(
    hub: Arc<Hub>,
    store: Store,
    holder: String,
    snapshots: Arc<Snapshots>,
    held_by_me: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut renew = tokio::time::interval(LEASE_TTL / 3);
    let mut tick = tokio::time::interval(hub.sweep_interval());
    // The first snapshot one interval after the start, as on a single node.
    let every = hub.config().snapshot_interval;
    let mut snapshot = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    for timer in [&mut renew, &mut tick, &mut snapshot] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    // The revision this node last wrote, while it holds the lease.
    let mut held: Option<u64> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = renew.tick() => {
                let value = Bytes::from(holder.clone());
                let renewed = match held {
                    Some(revision) => store.update(KEY, value, revision).await.ok(),
                    None => store.create(KEY, value).await.ok(),
                };
                match (held.is_some(), renewed.is_some()) {
                    (false, true) => tracing::info!("this node now proposes the sweeper's ticks"),
                    (true, false) => tracing::warn!("this node lost the sweeper's lease"),
                    _ => {}
                }
                held = renewed;
                snapshots.set_lease_held(held.is_some());
                held_by_me.send_if_modified(|was| std::mem::replace(was, held.is_some()) != held.is_some());
            }
            _ = tick.tick(), if held.is_some() => {
                if let Err(e) = hub.propose_tick().await {
                    tracing::debug!(error = %e.message, "a sweeper tick was not applied");
                }
            }
            _ = snapshot.tick(), if held.is_some() => snapshots.want(),
        }
    }
    held_by_me.send_replace(false);
    if let Some(revision) = held {
        let _ = store.delete_expect_revision(KEY, Some(revision)).await;
    }
}
