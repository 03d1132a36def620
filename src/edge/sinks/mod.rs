//! Webhook sinks: the hub posts the events a sink selects to its URL, in seq order, in
//! signed batches (Standard Webhooks), at least once, resuming after a restart from the
//! last batch its receiver acknowledged (docs/protocol.md, "Webhook sinks").
//!
//! - [`spec`]: a sink's definition (config file or API) and its signing secret; pure.
//! - [`deliver`]: one task per sink, reading the retained history like the HTTP event
//!   stream; retries, pauses, gap records.
//! - [`store`]: each sink's durable file in the data directory, and where a cursor is
//!   kept (those files, or a cluster's bucket).
//! - [`shared`]: the registry's cluster side: the bucket's watch and the lease holder's
//!   deliveries.
//! - [`api`]: `/v1/sinks`, for keys with `admin`.
//!
//! [`Sinks`] is the registry: it loads the files and the config's sinks at start, starts
//! and stops the tasks, and answers the API. It lives in `edge` because a sink is a client
//! of the hub like a subscriber is (an outbound one): it reads the history and never
//! takes part in ordering. In cluster mode ([`shared`]) every node shows every sink, and
//! the node holding the sweeper's lease delivers them, from cursors kept in the cluster's
//! bucket.

pub mod api;
pub mod deliver;
pub mod shared;
pub mod spec;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::cluster::sinks::{SharedError, SharedSinks};
use crate::edge::sinks::deliver::{Delivery, Sink};
use crate::edge::sinks::spec::{Secret, SinkSpec};
use crate::edge::sinks::store::{Cursors, SinkFile};
use crate::error::{ErrorCode, HubError};
use crate::hub::Hub;
use crate::ids::Seq;

/// Every sink of this hub.
pub struct Sinks {
    hub: Arc<Hub>,
    delivery: Arc<Delivery>,
    /// By id. A leaf lock: held to look up, add or remove, never across an `.await`.
    sinks: Mutex<BTreeMap<String, Arc<Sink>>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
}

impl Sinks {
    /// Loads the sinks of `<data-dir>/sinks` and of the configuration, writes a file for
    /// each config sink that has none yet (starting at the head), and starts them all.
    /// In a cluster (`shared`), leaves them to [`shared::follow`] instead. Blocking IO:
    /// call it before serving.
    pub fn start(
        hub: Arc<Hub>,
        shutdown: CancellationToken,
        tracker: TaskTracker,
        shared: Option<Arc<SharedSinks>>,
    ) -> Result<Arc<Sinks>, String> {
        let config = hub.config();
        let dir = store::dir(&config.data_dir);
        let cursors = match &shared {
            Some(shared) => Cursors::Shared(shared.clone()),
            None => Cursors::Files(dir.clone()),
        };
        let sinks = Arc::new(Sinks {
            delivery: Arc::new(delivery(config, cursors)?),
            sinks: Mutex::new(BTreeMap::new()),
            shutdown,
            tracker,
            hub: hub.clone(),
        });
        if let Some(shared) = shared {
            shared::start(&sinks, shared)?;
            return Ok(sinks);
        }
        let mut files: BTreeMap<String, SinkFile> = store::read_all(&dir)?
            .into_iter()
            .map(|f| (f.id.clone(), f))
            .collect();
        let head = hub.fanout().watermark();
        let fresh = |id: &str| SinkFile {
            id: id.to_owned(),
            cursor: head.0,
            epoch: hub.epoch().to_owned(),
            paused: false,
            definition: None,
        };
        let mut loaded = Vec::new();
        for entry in &config.sinks {
            let spec = SinkSpec::from_config(entry)?;
            let file = match files.remove(&spec.name) {
                Some(file) if file.definition.is_some() => {
                    return Err(format!(
                        "sink {:?} of the config file has the id of a sink made with \
                         POST /v1/sinks; rename one of them",
                        spec.name
                    ))
                }
                Some(file) => file,
                None => {
                    let file = fresh(&spec.name);
                    store::write(&dir, &file)
                        .map_err(|e| format!("cannot write {}: {e}", dir.display()))?;
                    file
                }
            };
            loaded.push(Sink::new(spec.name.clone(), spec, true, &file));
        }
        for (id, file) in files {
            let Some(definition) = &file.definition else {
                info!(sink = %id, "a cursor file of a sink no longer in the config file is kept, unused");
                continue;
            };
            let spec = SinkSpec::from_stored(definition)
                .map_err(|e| format!("{}: sink {id}: {e}", dir.display()))?;
            loaded.push(Sink::new(id, spec, false, &file));
        }
        let mut names = std::collections::HashSet::new();
        for sink in &loaded {
            if !names.insert(sink.spec.name.clone()) {
                return Err(format!(
                    "two sinks are named {:?} (one in the config file, one made with \
                     POST /v1/sinks); rename one of them",
                    sink.spec.name
                ));
            }
        }
        for sink in loaded {
            sinks.launch(Arc::new(sink));
        }
        Ok(sinks)
    }

    /// Runs `sink`'s delivery task until it is stopped or shutdown.
    fn launch(&self, sink: Arc<Sink>) {
        let stop = sink.stop.clone();
        let shutdown = self.shutdown.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => stop.cancel(),
                () = stop.cancelled() => {}
            }
        });
        self.sinks.lock().insert(sink.id.clone(), sink.clone());
        info!(sink = %sink.spec.name, url = %sink.spec.url, "webhook sink started");
        let (hub, delivery) = (self.hub.clone(), self.delivery.clone());
        self.tracker.spawn(async move {
            deliver::run(sink.clone(), hub, delivery).await;
            // In a cluster a task also ends when another node took the sink over.
            sink.set_delivering(false);
        });
    }

    /// `POST /v1/sinks`: a new sink and its secret, shown this once.
    pub async fn create(&self, body: Value) -> Result<(Arc<Sink>, Secret), HubError> {
        let id = uuid::Uuid::new_v4().to_string();
        let secret = Secret::generate();
        let (spec, start) =
            SinkSpec::from_api(body, &id, secret.clone()).map_err(HubError::bad_request)?;
        let hub = &self.hub;
        let head = hub.fanout().watermark();
        let cursor = match (start.since, start.epoch) {
            (Some(since), Some(epoch)) => {
                if epoch != hub.epoch() {
                    return Err(HubError::bad_request(format!(
                        "`epoch` {epoch:?} is not this hub's ({:?})",
                        hub.epoch()
                    )));
                }
                if Seq(since) > head {
                    return Err(HubError::bad_request(format!(
                        "`since` {since} is beyond the latest seq {head}"
                    )));
                }
                Seq(since)
            }
            _ => head,
        };
        let file = SinkFile {
            id: id.clone(),
            cursor: cursor.0,
            epoch: hub.epoch().to_owned(),
            paused: false,
            definition: Some(spec.to_stored()),
        };
        let sink = Arc::new(Sink::new(id.clone(), spec, false, &file));
        self.reserve_name(&sink)?;
        let Cursors::Files(dir) = &self.delivery.cursors else {
            // The lease holder's registry takes it from the bucket and delivers it.
            let entry = sink.shared_entry();
            if let Err(e) = self.shared()?.create(&entry).await {
                self.sinks.lock().remove(&id);
                return Err(unkept(e));
            }
            return Ok((sink, secret));
        };
        let dir = dir.clone();
        let written = tokio::task::spawn_blocking(move || store::write(&dir, &file)).await;
        if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
            self.sinks.lock().remove(&id);
            return Err(HubError::new(
                ErrorCode::Unavailable,
                format!("cannot keep the sink in the data directory: {e}"),
            ));
        }
        self.launch(sink.clone());
        Ok((sink, secret))
    }

    /// Files a new sink under its id, unless its name is taken.
    fn reserve_name(&self, sink: &Arc<Sink>) -> Result<(), HubError> {
        {
            let mut sinks = self.sinks.lock();
            if sinks.values().any(|s| s.spec.name == sink.spec.name) {
                return Err(HubError::bad_request(format!(
                    "`name`: a sink named {:?} exists already",
                    sink.spec.name
                )));
            }
            // Reserved under the lock, so two requests cannot both take the name.
            sinks.insert(sink.id.clone(), sink.clone());
        }
        Ok(())
    }

    /// The cluster's bucket, in cluster mode.
    fn shared(&self) -> Result<&Arc<SharedSinks>, HubError> {
        match &self.delivery.cursors {
            Cursors::Shared(shared) => Ok(shared),
            Cursors::Files(_) => Err(HubError::new(ErrorCode::Internal, "not a cluster")),
        }
    }

    /// Every sink, by id.
    pub fn list(&self) -> Result<Vec<Arc<Sink>>, HubError> {
        Ok(self.sinks.lock().values().cloned().collect())
    }

    pub fn get(&self, id: &str) -> Result<Arc<Sink>, HubError> {
        self.sinks
            .lock()
            .get(id)
            .cloned()
            .ok_or_else(|| HubError::not_found(format!("no sink {id}")))
    }

    /// `DELETE /v1/sinks/{id}`: stops the sink and forgets it. A sink of the config file
    /// is refused: the file would bring it back at the next start.
    pub async fn delete(&self, id: &str) -> Result<(), HubError> {
        let sink = self.get(id)?;
        if sink.from_file {
            return Err(HubError::bad_request(format!(
                "sink {id} is defined in the config file; remove its [[sinks]] table there"
            )));
        }
        if let Cursors::Shared(shared) = &self.delivery.cursors {
            // The other nodes forget it when their watch of the bucket says so; this one
            // at once, so its next answer already reflects the delete.
            shared.delete(id).await.map_err(unkept)?;
            self.forget(id);
            return Ok(());
        }
        self.forget(id);
        let Cursors::Files(dir) = &self.delivery.cursors else {
            unreachable!("answered above")
        };
        let (dir, id) = (dir.clone(), id.to_owned());
        let removed = tokio::task::spawn_blocking(move || store::remove(&dir, &id)).await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(std::io::Error::other) {
            return Err(HubError::new(
                ErrorCode::Unavailable,
                format!("the sink is stopped, but its file could not be removed: {e}"),
            ));
        }
        Ok(())
    }

    /// Stops a sink's task and forgets it, metrics included.
    fn forget(&self, id: &str) {
        let Some(sink) = self.sinks.lock().remove(id) else {
            return;
        };
        sink.stop.cancel();
        self.hub.metrics().forget_sink(sink.label());
    }

    /// `POST /v1/sinks/{id}/resume`.
    pub async fn resume(&self, id: &str) -> Result<Arc<Sink>, HubError> {
        let sink = self.get(id)?;
        if let Cursors::Shared(shared) = &self.delivery.cursors {
            // Written to the bucket; the delivering node takes it from its watch.
            if let Some(entry) = shared.resume(id).await.map_err(unkept)? {
                sink.adopt(&entry, sink.is_delivering());
            }
            return Ok(sink);
        }
        if sink.resume() {
            deliver::persist(&sink, &self.delivery).await;
        }
        Ok(sink)
    }

    /// A sink as the API shows it.
    pub fn view(&self, sink: &Sink) -> Value {
        let status = sink.status();
        let mut view = Map::new();
        view.insert("id".into(), sink.id.clone().into());
        sink.spec.view(&mut view);
        let source = if sink.from_file { "config" } else { "api" };
        view.insert("source".into(), source.into());
        let state = if status.paused { "paused" } else { "active" };
        view.insert("state".into(), state.into());
        view.insert("cursor".into(), status.cursor.0.into());
        view.insert("epoch".into(), status.epoch.clone().into());
        view.insert("lag".into(), self.lag(&status).into());
        view.insert("lastStatus".into(), status.last_status.into());
        view.insert(
            "consecutiveFailures".into(),
            status.consecutive_failures.into(),
        );
        view.insert("lastError".into(), status.last_error.into());
        view.insert("deliveredEvents".into(), status.delivered_events.into());
        if matches!(self.delivery.cursors, Cursors::Shared(_)) {
            view.insert("node".into(), status.node.into());
        }
        Value::Object(view)
    }

    /// Seqs the hub has delivered past the sink's cursor (matching or not).
    fn lag(&self, status: &deliver::Status) -> u64 {
        self.hub
            .fanout()
            .watermark()
            .0
            .saturating_sub(status.cursor.0)
    }

    /// Sets the sinks' gauges, at scrape time.
    pub fn refresh_gauges(&self) {
        let metrics = self.hub.metrics();
        for sink in self.sinks.lock().values() {
            let status = sink.status();
            let label = sink.label();
            metrics
                .sink_cursor
                .get_or_create(label)
                .set(status.cursor.0 as i64);
            metrics
                .sink_lag
                .get_or_create(label)
                .set(self.lag(&status) as i64);
            metrics
                .sink_paused
                .get_or_create(label)
                .set(i64::from(status.paused));
            metrics
                .sink_consecutive_failures
                .get_or_create(label)
                .set(i64::from(status.consecutive_failures));
        }
    }
}

/// The HTTP client and retry rules every sink shares, from the configuration.
fn delivery(config: &crate::Config, cursors: Cursors) -> Result<Delivery, String> {
    let client = reqwest::Client::builder()
        .timeout(config.sink_timeout)
        .connect_timeout(config.sink_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("actionhub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the webhook client: {e}"))?;
    Ok(Delivery {
        client,
        timeout: config.sink_timeout,
        backoff_max: config.sink_backoff_max,
        max_failures: config.sink_max_failures,
        max_retry: config.sink_max_retry,
        cursors,
    })
}

/// A change the cluster's bucket did not take.
fn unkept(error: SharedError) -> HubError {
    match error {
        SharedError::Conflict => HubError::new(
            ErrorCode::Unavailable,
            "the sink was changed on another node meanwhile; try again",
        ),
        SharedError::Nats(e) => HubError::new(
            ErrorCode::Unavailable,
            format!("cannot keep the sink in the cluster's bucket: {e}"),
        ),
    }
}
