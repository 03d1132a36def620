//! The webhook sinks' shared place in a cluster: the `<stream>-sinks` key-value bucket,
//! one key a sink (`sink.<id>`) holding its definition (secret included), its cursor and
//! its status, so every node shows the same sinks and a node that takes the delivery over
//! resumes after the last batch acknowledged anywhere.
//!
//! Every write of a delivering node names the revision it last wrote or read
//! (compare-and-set), so a node that lost the sweeper's lease cannot move a cursor behind
//! the node that took it over: its write fails, and its delivery stops
//! ([`SharedSinks::keep`]). Which node delivers is the registry's business
//! (`edge::sinks::shared`); this module only keeps the bucket.
//!
//! The first node that needs the bucket makes it (one with sinks in its config file, or
//! the first `POST /v1/sinks`), as the snapshot bucket is made by its first writer; a
//! bucket found is checked like the stream is.

use std::collections::HashMap;

use async_nats::jetstream::kv::{self, Store};
use async_nats::jetstream::Context;
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{watch, OnceCell};

use crate::config::Config;

/// What one sink's key holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SharedEntry {
    pub id: String,
    /// Defined in the config files (`config`) or by the API (`api`).
    pub from_file: bool,
    /// The definition as `SinkSpec::to_stored` writes it, secret included: any node may
    /// have to deliver it, including one whose config file does not name it.
    pub definition: Value,
    /// Every event up to this seq was acknowledged (or was not selected).
    pub cursor: u64,
    pub epoch: String,
    pub paused: bool,
    /// The node delivering the sink; none before the first takes it.
    pub node: Option<String>,
    pub last_status: Option<u16>,
    pub consecutive_failures: u32,
    pub last_error: Option<String>,
    pub delivered_events: u64,
    /// The last seq examined for the batch being delivered, written before it is posted:
    /// a node taking the sink over resends that very batch (the same items, hence the
    /// same `webhook-id`), so a takeover repeats only a whole batch under its own id.
    /// Absent between batches, and in entries of earlier releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
}

/// How a sink's key is named.
pub fn key(id: &str) -> String {
    format!("sink.{id}")
}

/// Why a bucket operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    /// A create found the key, or an update found another revision than it named.
    #[error("the sink was changed meanwhile")]
    Conflict,
    #[error("{0}")]
    Nats(String),
}

/// The bucket, this node's name, and whether this node holds the sweeper's lease (the
/// sinks' deliverer is its holder).
pub struct SharedSinks {
    js: Context,
    wanted: kv::Config,
    store: OnceCell<Store>,
    node: String,
    lease: watch::Receiver<bool>,
    /// By sink id: the revision this node last wrote or read for a sink it delivers, and
    /// the cursor that revision holds. A leaf lock.
    held: Mutex<HashMap<String, (u64, u64)>>,
}

impl SharedSinks {
    pub(super) fn new(
        js: &Context,
        config: &Config,
        node: String,
        lease: watch::Receiver<bool>,
    ) -> SharedSinks {
        SharedSinks {
            js: js.clone(),
            wanted: kv::Config {
                bucket: format!("{}-sinks", config.nats_stream),
                description: "actionhub's webhook sinks: definitions, cursors, status".into(),
                history: 1,
                num_replicas: config.nats_replicas,
                ..Default::default()
            },
            store: OnceCell::new(),
            node,
            lease,
            held: Mutex::default(),
        }
    }

    /// This node's name, as the entries name their deliverer.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether this node holds the sweeper's lease, and so delivers every sink.
    pub fn lease(&self) -> watch::Receiver<bool> {
        self.lease.clone()
    }

    /// The bucket if some node made it.
    pub async fn existing(&self) -> Result<Option<Store>, SharedError> {
        if let Some(store) = self.store.get() {
            return Ok(Some(store.clone()));
        }
        let Ok(store) = self.js.get_key_value(&self.wanted.bucket).await else {
            return Ok(None);
        };
        self.checked(store).await.map(Some)
    }

    /// The bucket, made when missing.
    pub async fn made(&self) -> Result<Store, SharedError> {
        if let Some(store) = self.existing().await? {
            return Ok(store);
        }
        let store = match self.js.create_key_value(self.wanted.clone()).await {
            Ok(store) => store,
            // Another node may have made it meanwhile.
            Err(created) => self
                .js
                .get_key_value(&self.wanted.bucket)
                .await
                .map_err(|_| {
                    SharedError::Nats(format!(
                        "the sinks' bucket {} could not be made: {created}",
                        self.wanted.bucket
                    ))
                })?,
        };
        self.checked(store).await
    }

    /// Refuses a bucket whose settings would lose cursors: entries that expire, or a
    /// replica count other than the stream's.
    async fn checked(&self, store: Store) -> Result<Store, SharedError> {
        let status = store
            .status()
            .await
            .map_err(|e| SharedError::Nats(e.to_string()))?;
        let bucket = &self.wanted.bucket;
        let replicas = status.info.config.num_replicas;
        if replicas != self.wanted.num_replicas {
            return Err(SharedError::Nats(format!(
                "the sinks' bucket {bucket} has {replicas} replicas and this node was started \
                 with --nats-replicas {}",
                self.wanted.num_replicas
            )));
        }
        if !status.max_age().is_zero() {
            return Err(SharedError::Nats(format!(
                "the sinks' bucket {bucket} lets its entries expire, which would lose cursors; \
                 remove its max age"
            )));
        }
        Ok(self.store.get_or_init(|| async { store }).await.clone())
    }

    /// A sink's entry and its revision; none when there is no bucket or no such sink.
    pub async fn get(&self, id: &str) -> Result<Option<(SharedEntry, u64)>, SharedError> {
        let Some(store) = self.existing().await? else {
            return Ok(None);
        };
        let entry = store
            .entry(key(id))
            .await
            .map_err(|e| SharedError::Nats(e.to_string()))?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                Ok(Some((decode(&entry.value)?, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Adds a sink; [`SharedError::Conflict`] when its id is taken.
    pub async fn create(&self, entry: &SharedEntry) -> Result<u64, SharedError> {
        let store = self.made().await?;
        store
            .create(key(&entry.id), encode(entry))
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => SharedError::Conflict,
                _ => SharedError::Nats(e.to_string()),
            })
    }

    /// Replaces a sink's entry if it is still at `revision`.
    pub async fn update(&self, entry: &SharedEntry, revision: u64) -> Result<u64, SharedError> {
        let store = self.made().await?;
        store
            .update(key(&entry.id), encode(entry), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => SharedError::Conflict,
                _ => SharedError::Nats(e.to_string()),
            })
    }

    pub async fn delete(&self, id: &str) -> Result<(), SharedError> {
        self.held.lock().remove(id);
        let store = self.made().await?;
        store
            .delete(key(id))
            .await
            .map_err(|e| SharedError::Nats(e.to_string()))
    }

    /// Takes a paused sink up again: answers the entry as written, none when the sink is
    /// gone. The delivering node sees it in its watch.
    pub async fn resume(&self, id: &str) -> Result<Option<SharedEntry>, SharedError> {
        loop {
            let Some((mut entry, revision)) = self.get(id).await? else {
                return Ok(None);
            };
            if !entry.paused {
                return Ok(Some(entry));
            }
            entry.paused = false;
            entry.consecutive_failures = 0;
            match self.update(&entry, revision).await {
                Ok(_) => return Ok(Some(entry)),
                Err(SharedError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Makes this node the sink's deliverer: writes its name into the entry over whatever
    /// revision is there (this node holds the lease now), and answers the entry it
    /// delivers from; none when the sink is gone.
    pub async fn take_over(&self, id: &str) -> Result<Option<SharedEntry>, SharedError> {
        loop {
            let Some((mut entry, revision)) = self.get(id).await? else {
                return Ok(None);
            };
            entry.node = Some(self.node.clone());
            match self.update(&entry, revision).await {
                Ok(revision) => {
                    self.held
                        .lock()
                        .insert(id.to_owned(), (revision, entry.cursor));
                    return Ok(Some(entry));
                }
                Err(SharedError::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes what this node's delivery of a sink has reached. False when another node
    /// moved the sink's cursor, or took its delivery over, or the sink was deleted: the
    /// delivery stops. A change by the API alone (a resume) is taken in and written over.
    /// A failure to reach NATS is logged and answered true: the entry stays behind, so
    /// the next deliverer sends again what followed it (at least once still holds).
    pub async fn keep(&self, mut entry: SharedEntry) -> bool {
        let Some((mut revision, mut cursor)) = self.held.lock().get(&entry.id).copied() else {
            return false;
        };
        loop {
            match self.update(&entry, revision).await {
                Ok(written) => {
                    self.held
                        .lock()
                        .insert(entry.id.clone(), (written, entry.cursor));
                    return true;
                }
                Err(SharedError::Conflict) => match self.get(&entry.id).await {
                    Ok(Some((found, at)))
                        if found.node.as_deref() == Some(&self.node)
                            && found.cursor == cursor
                            && at != revision =>
                    {
                        // Only the API wrote meanwhile (a resume): keep what it asked.
                        if !found.paused && entry.paused {
                            entry.paused = false;
                            entry.consecutive_failures = 0;
                        }
                        (revision, cursor) = (at, found.cursor);
                    }
                    Ok(_) => {
                        self.held.lock().remove(&entry.id);
                        tracing::warn!(sink = %entry.id, "another node delivers the sink now, or it was deleted; this node stops delivering it");
                        return false;
                    }
                    Err(e) => return self.unkept(&entry.id, &e),
                },
                Err(e) => return self.unkept(&entry.id, &e),
            }
        }
    }

    fn unkept(&self, id: &str, error: &SharedError) -> bool {
        tracing::warn!(sink = %id, %error, "cannot write the sink's cursor to the shared bucket");
        true
    }

    /// Whether an entry seen in the watch, at `revision` and naming `node` as its
    /// deliverer, shows that another node took over a sink this node delivers. Only a
    /// revision newer than this node's own last write counts: the watch may still hold
    /// entries older than this node's takeover.
    pub fn superseded(&self, id: &str, revision: u64, node: Option<&str>) -> bool {
        let held = self.held.lock().get(id).map(|(at, _)| *at);
        held.is_some_and(|at| revision > at) && node != Some(self.node.as_str())
    }

    /// Forgets what this node delivered, when it stops delivering (the lease moved).
    pub fn release(&self, id: &str) {
        self.held.lock().remove(id);
    }
}

fn encode(entry: &SharedEntry) -> Bytes {
    Bytes::from(serde_json::to_vec(entry).expect("a sink entry serializes"))
}

/// Reads an entry's value.
pub fn decode(value: &[u8]) -> Result<SharedEntry, SharedError> {
    serde_json::from_slice(value)
        .map_err(|e| SharedError::Nats(format!("a sink entry does not read: {e}")))
}
