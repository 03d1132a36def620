//! The sinks' registry in a cluster: every node keeps a copy of every sink, read from the
//! cluster's bucket (`cluster::sinks`) through a watch, so `GET /v1/sinks` answers the
//! same on every node; the node holding the sweeper's lease runs the delivery tasks, from
//! the cursors in the bucket.
//!
//! One lease for every sink rather than one a sink: the sweeper's already exists, is
//! renewed and handed over at a clean stop, and a sink costs its deliverer one batch and
//! one request at a time, so spreading them would buy little and add a lease a sink to
//! reason about. At a takeover the new holder writes its name into each sink's entry
//! (which fences the old holder: its next write names a revision that is gone) and goes
//! on after the cursor found there.
//!
//! Sinks of the config files are keyed by name, and a name defined alike on every node is
//! one sink. A node whose config file defines a name otherwise than the bucket holds it
//! refuses to start ([`check_config`]): two definitions under one cursor would deliver to
//! whichever node happened to hold the lease.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt as _;
use tracing::{debug, info, warn};

use crate::cluster::sinks::{decode, SharedEntry, SharedError, SharedSinks};
use crate::config::Config;
use crate::edge::sinks::deliver::Sink;
use crate::edge::sinks::spec::SinkSpec;
use crate::edge::sinks::store::SinkFile;
use crate::edge::sinks::Sinks;
use crate::hub::Hub;

/// How often a node without the bucket looks for it, and the lease holder checks that it
/// delivers every sink (one it was fenced off while it held the lease is taken back
/// here, at most this often).
const RECHECK: Duration = Duration::from_secs(2);

/// Refuses a config sink that the bucket holds with another definition (see the module
/// doc), or that names a sink made by the API. Called before the node serves.
pub async fn check_config(shared: &SharedSinks, config: &Config) -> Result<(), String> {
    for table in &config.sinks {
        let spec = SinkSpec::from_config(table)?;
        let found = shared.get(&spec.name).await.map_err(|e| e.to_string())?;
        let Some((entry, _)) = found else { continue };
        if !entry.from_file {
            return Err(format!(
                "sink {:?} of the config file has the id of a sink made with POST /v1/sinks; \
                 rename one of them",
                spec.name
            ));
        }
        if entry.definition != spec.to_stored() {
            return Err(format!(
                "sink {:?} is defined otherwise in this node's config file than on the \
                 cluster's other nodes (the `{}-sinks` bucket): define it alike on every \
                 node, or give the changed one a new name",
                spec.name, config.nats_stream
            ));
        }
    }
    Ok(())
}

/// Files the config's sinks (not delivering yet) and starts [`follow`].
pub(super) fn start(sinks: &Arc<Sinks>, shared: Arc<SharedSinks>) -> Result<(), String> {
    let hub = &sinks.hub;
    for table in &hub.config().sinks {
        let spec = SinkSpec::from_config(table)?;
        let file = SinkFile {
            id: spec.name.clone(),
            cursor: hub.fanout().watermark().0,
            epoch: hub.epoch().to_owned(),
            paused: false,
            definition: None,
        };
        let sink = Sink::new(spec.name.clone(), spec, true, &file);
        sinks.sinks.lock().insert(sink.id.clone(), Arc::new(sink));
    }
    sinks.tracker.spawn(follow(sinks.clone(), shared));
    Ok(())
}

/// Keeps this node's copy of the bucket and, while this node holds the lease, delivers
/// every sink; until shutdown.
async fn follow(sinks: Arc<Sinks>, shared: Arc<SharedSinks>) {
    let stop = sinks.shutdown.clone();
    tokio::select! {
        () = stop.cancelled() => return,
        () = caught_up(&sinks.hub) => {}
    }
    // A node with sinks in its config file is a first user and makes the bucket; the
    // others wait for it.
    let has_config = sinks.sinks.lock().values().any(|s| s.from_file);
    let store = loop {
        let found = match has_config {
            true => shared.made().await.map(Some),
            false => shared.existing().await,
        };
        match found {
            Ok(Some(store)) => break store,
            Ok(None) => {}
            Err(e) => warn!(error = %e, "cannot open the sinks' bucket; trying again"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECHECK) => {}
        }
    };
    register_config_sinks(&sinks, &shared).await;
    let mut lease = shared.lease();
    let mut lease_open = true;
    let mut recheck = tokio::time::interval(RECHECK);
    loop {
        let mut watch = match store.watch_with_history("sink.>").await {
            Ok(watch) => watch,
            Err(e) => {
                warn!(error = %e, "cannot watch the sinks' bucket; trying again");
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RECHECK) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                changed = lease.changed(), if lease_open => {
                    lease_open = changed.is_ok();
                    match *lease.borrow_and_update() && lease_open {
                        true => take_over_all(&sinks, &shared).await,
                        false => release_all(&sinks, &shared),
                    }
                }
                _ = recheck.tick() => {
                    if *lease.borrow() && lease_open {
                        take_over_all(&sinks, &shared).await;
                    }
                }
                item = watch.next() => match item {
                    Some(Ok(entry)) => on_entry(&sinks, &shared, entry).await,
                    Some(Err(e)) => {
                        debug!(error = %e, "the sinks' watch failed; watching again");
                        break;
                    }
                    None => break,
                },
            }
        }
    }
}

/// Waits until this node has applied the stream as it was at start, so a new config
/// sink's cursor (the head) is the cluster's head, not a past one.
async fn caught_up(hub: &Hub) {
    while !hub
        .order_status()
        .is_none_or(|o| o.caught_up.load(std::sync::atomic::Ordering::Acquire))
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Adds the config's sinks the bucket does not hold yet, starting at the head.
async fn register_config_sinks(sinks: &Sinks, shared: &SharedSinks) {
    let files: Vec<Arc<Sink>> = sinks
        .sinks
        .lock()
        .values()
        .filter(|s| s.from_file)
        .cloned()
        .collect();
    let head = sinks.hub.fanout().watermark();
    for sink in files {
        let entry = SharedEntry {
            cursor: head.0,
            ..sink.shared_entry()
        };
        match shared.create(&entry).await {
            Ok(_) => {
                info!(sink = %sink.spec.name, "the config file's sink is shared with the cluster")
            }
            Err(SharedError::Conflict) => {}
            Err(e) => {
                warn!(sink = %sink.spec.name, error = %e, "cannot add the config file's sink to the sinks' bucket")
            }
        }
    }
}

/// Takes in one change of the bucket.
async fn on_entry(sinks: &Sinks, shared: &SharedSinks, entry: kv::Entry) {
    let Some(id) = entry.key.strip_prefix("sink.") else {
        return;
    };
    if entry.operation != kv::Operation::Put {
        shared.release(id);
        sinks.forget(id);
        info!(sink = %id, "webhook sink deleted");
        return;
    }
    let found = match decode(&entry.value) {
        Ok(found) => found,
        Err(e) => {
            return warn!(sink = %id, error = %e, "a sink's entry in the bucket does not read")
        }
    };
    let known = sinks.sinks.lock().get(id).cloned();
    match known {
        Some(sink)
            if sink.is_delivering()
                && shared.superseded(id, entry.revision, found.node.as_deref()) =>
        {
            // Another node took the sink over: this node's task stops now rather than at
            // its next write, and shows the bucket's status from here on.
            shared.release(id);
            sink.stop.cancel();
            let copy = Arc::new(Sink::from_shared(&found, sink.spec.clone()));
            sinks.sinks.lock().insert(id.to_owned(), copy);
            info!(sink = %sink.spec.name, "another node delivers the webhook sink now");
        }
        Some(sink) => sink.adopt(&found, sink.is_delivering()),
        None => {
            let spec = match SinkSpec::from_stored(&found.definition) {
                Ok(spec) => spec,
                Err(e) => {
                    return warn!(sink = %id, error = %e, "a sink's definition in the bucket does not read")
                }
            };
            let sink = Sink::from_shared(&found, spec);
            sinks.sinks.lock().insert(id.to_owned(), Arc::new(sink));
        }
    }
    // A new sink is taken at once; one another node delivers waits for the recheck.
    if *shared.lease().borrow() && found.node.is_none() {
        take_over(sinks, shared, id).await;
    }
}

/// This node holds the lease: delivers every sink it does not deliver yet.
async fn take_over_all(sinks: &Sinks, shared: &SharedSinks) {
    let idle: Vec<String> = sinks
        .sinks
        .lock()
        .values()
        .filter(|s| !s.is_delivering())
        .map(|s| s.id.clone())
        .collect();
    for id in idle {
        take_over(sinks, shared, &id).await;
    }
}

/// Starts delivering one sink here, from its entry in the bucket.
async fn take_over(sinks: &Sinks, shared: &SharedSinks, id: &str) {
    let known = sinks.sinks.lock().get(id).cloned();
    let Some(old) = known.filter(|s| !s.is_delivering()) else {
        return;
    };
    match shared.take_over(id).await {
        Ok(Some(entry)) => {
            let sink = Arc::new(Sink::from_shared(&entry, old.spec.clone()));
            sink.set_delivering(true);
            old.stop.cancel();
            info!(sink = %sink.spec.name, cursor = entry.cursor, "this node delivers the webhook sink");
            sinks.launch(sink);
        }
        Ok(None) => {}
        Err(e) => warn!(sink = %id, error = %e, "cannot take the webhook sink over"),
    }
}

/// This node lost the lease: stops every delivery task here, keeping the sinks' copies.
fn release_all(sinks: &Sinks, shared: &SharedSinks) {
    let mut all = sinks.sinks.lock();
    for sink in all.values_mut() {
        if !sink.is_delivering() {
            continue;
        }
        sink.stop.cancel();
        shared.release(&sink.id);
        *sink = Arc::new(Sink::from_shared(&sink.shared_entry(), sink.spec.clone()));
        info!(sink = %sink.spec.name, "this node no longer delivers the webhook sink");
    }
}
