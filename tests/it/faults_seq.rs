//! Faults around the sequencer (issue 11): publishers racing a shutdown, a pipeline that
//! lags behind the sequencer, and big snapshots taken while others publish.
//!
//! Some of these drive the hub's own components in-process (`actionhub::hub::Hub` over a
//! test [`Log`]), because the fault lives between the sequencer and the log: a log that
//! records what it was given, or one that holds appends back until the test lets go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actionhub::event::Event;
use actionhub::hub::Hub as CoreHub;
use actionhub::log::Log;
use actionhub::retention::Record;
use actionhub::state::AdminOp;
use actionhub::Config;
use parking_lot::Mutex;
use serde_json::json;

use crate::support::{bounded, uuid, WAIT};

/// A log that keeps the seqs it was given, for the test to compare with what was
/// acknowledged.
struct Recording(Arc<Mutex<Vec<u64>>>);

impl Log for Recording {
    fn append(&mut self, records: &[Arc<Record>]) -> std::io::Result<()> {
        self.0.lock().extend(records.iter().map(|r| r.seq.0));
        Ok(())
    }

    fn append_admin(&mut self, _op: &AdminOp) -> std::io::Result<()> {
        Ok(())
    }
}

/// Publishers keep publishing while the pipeline is closed under them: whatever they were
/// told was accepted must have reached the log, and nothing may be committed after the
/// log's last record (the final snapshot would wait for it forever). A publisher already
/// holding room in the pipeline when it closes is the race; several rounds make it likely
/// that one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_acknowledged_unless_logged_when_the_pipeline_closes() {
    const PUBLISHERS: usize = 8;
    const ROUNDS: usize = 20;
    for round in 0..ROUNDS {
        let dir = tempfile::tempdir().expect("temp dir");
        let logged = Arc::new(Mutex::new(Vec::new()));
        let (hub, pipeline) = CoreHub::start(
            Arc::new(Config::ephemeral(dir.path())),
            Box::new(Recording(logged.clone())),
        );
        let acked_so_far = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Handle::current();
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|_| {
                let (hub, acked_so_far, runtime) =
                    (hub.clone(), acked_so_far.clone(), runtime.clone());
                std::thread::spawn(move || {
                    let page = json!({
                        "type": "page", "customerId": uuid(), "sessionId": uuid(),
                        "page": {"url": "https://shop.example/p"},
                    });
                    let mut acked = Vec::new();
                    loop {
                        let event = Event::from_json(page.clone());
                        let Ok(submitted) = hub.try_submit(vec![event]) else {
                            continue;
                        };
                        match runtime.block_on(submitted.acknowledged()).pop() {
                            Some(Ok(ack)) => {
                                acked.push(ack.seq.0);
                                acked_so_far.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => return acked,
                        }
                    }
                })
            })
            .collect();
        bounded(WAIT, "publishes to be acknowledged", async {
            while acked_so_far.load(Ordering::Relaxed) < 50 * PUBLISHERS {
                tokio::task::yield_now().await;
            }
        })
        .await;
        hub.close_pipeline();
        let joined = tokio::task::spawn_blocking(move || {
            let acked: Vec<u64> = publishers
                .into_iter()
                .flat_map(|p| p.join().expect("publisher"))
                .collect();
            pipeline.join();
            acked
        });
        let acked = bounded(WAIT, "publishers and the pipeline to end", joined)
            .await
            .expect("joined");
        let logged = logged.lock();
        let unlogged: Vec<u64> = acked
            .iter()
            .copied()
            .filter(|seq| logged.binary_search(seq).is_err())
            .collect();
        assert!(
            unlogged.is_empty(),
            "round {round}: acknowledged but never logged: {unlogged:?}"
        );
        assert_eq!(
            hub.latest_seq().0,
            logged.last().copied().unwrap_or(0),
            "round {round}: committed after the log's last record"
        );
    }
}
