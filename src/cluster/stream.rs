//! The stream the nodes share: created when missing, checked when present.
//!
//! Its name is `--nats-stream`; it takes one subject, `<name>.inputs`. It keeps messages
//! for `--retention-age`: older inputs are in the shared snapshots (written every
//! snapshot interval, far more often), so a node needs only what came after the newest. The epoch, which
//! names this history of seqs, is kept in the stream's own metadata: the stream is the
//! history, so a stream deleted and made again is a new epoch on every node at once, and
//! nodes that share a stream share an epoch without asking each other.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::stream::{Config as StreamConfig, StorageType, Stream};
use async_nats::jetstream::Context;

use crate::cluster::ClusterError;
use crate::config::Config;
use crate::store::recovery::new_epoch;

/// The metadata key that holds the epoch.
const EPOCH_KEY: &str = "actionhub_epoch";

/// How long the stream remembers a message id, so a proposal sent again after a lost
/// acknowledgement is stored once (JetStream's own default).
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The subject the inputs are published on.
pub(super) fn subject(config: &Config) -> String {
    format!("{}.inputs", config.nats_stream)
}

/// Finds the stream, or creates it, and returns it with its epoch. A stream of that name
/// that actionhub did not make, or made with other settings, is refused with what differs.
pub(super) async fn ensure(
    js: &Context,
    config: &Config,
) -> Result<(Stream, String), ClusterError> {
    let name = &config.nats_stream;
    let stream = match js.get_stream(name).await {
        Ok(stream) => stream,
        Err(_) => {
            let wanted = StreamConfig {
                name: name.clone(),
                subjects: vec![subject(config)],
                storage: StorageType::File,
                num_replicas: config.nats_replicas,
                duplicate_window: DUPLICATE_WINDOW,
                max_age: config.retention_age,
                description: Some(
                    "actionhub's inputs, in the order every node applies them".into(),
                ),
                metadata: HashMap::from([(EPOCH_KEY.to_owned(), new_epoch())]),
                ..Default::default()
            };
            match js.create_stream(wanted).await {
                Ok(stream) => {
                    tracing::info!(stream = %name, replicas = config.nats_replicas, "created the shared stream");
                    stream
                }
                // Another node may have made it meanwhile, with another epoch: take theirs.
                Err(created) => js
                    .get_stream(name)
                    .await
                    // Neither found nor made: NATS could not answer (a stream with other
                    // settings is found, and refused by `check` below).
                    .map_err(|found| ClusterError::Unreachable {
                        what: format!("stream {name}"),
                        problem: format!("finding it: {found}; creating it: {created}"),
                    })?,
            }
        }
    };
    let epoch = check(&stream, config)?;
    Ok((stream, epoch))
}

/// The stream's epoch, once its settings are known to be actionhub's.
fn check(stream: &Stream, config: &Config) -> Result<String, ClusterError> {
    let found = &stream.cached_info().config;
    let refuse = |problem: String| ClusterError::Stream {
        stream: config.nats_stream.clone(),
        problem,
    };
    let Some(epoch) = found.metadata.get(EPOCH_KEY) else {
        return Err(refuse(format!(
            "it exists but was not made by actionhub (its metadata has no `{EPOCH_KEY}`); \
             choose another --nats-stream"
        )));
    };
    let wanted_subjects = vec![subject(config)];
    if found.subjects != wanted_subjects {
        return Err(refuse(format!(
            "it takes the subjects {:?}, not {wanted_subjects:?}",
            found.subjects
        )));
    }
    if found.num_replicas != config.nats_replicas {
        return Err(refuse(format!(
            "it has {} replicas and this node was started with --nats-replicas {}; start it \
             with --nats-replicas {} or change the stream's replicas with the nats CLI",
            found.num_replicas, config.nats_replicas, found.num_replicas
        )));
    }
    if found.max_messages > 0 || found.max_bytes > 0 {
        // A count or size limit could drop messages no shared snapshot covers yet under a
        // burst; the age limit drops only what the snapshots written since cover.
        return Err(refuse(
            "it has a message or size limit, which could drop inputs no shared snapshot \
             holds yet; remove them (the stream is bounded by age: --retention-age)"
                .into(),
        ));
    }
    if found.max_age != config.retention_age {
        return Err(refuse(format!(
            "it keeps messages for {}, and this node's --retention-age is {}: start every \
             node with the stream's, or change the stream's max age (`nats stream edit {} \
             --max-age {}s`)",
            humantime::format_duration(found.max_age),
            humantime::format_duration(config.retention_age),
            config.nats_stream,
            config.retention_age.as_secs()
        )));
    }
    Ok(epoch.clone())
}
