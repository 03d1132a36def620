//! What every benchmark binary shares: the criterion settings that keep a whole
//! `cargo bench` well under a minute on this project's 2-core machines.

use std::time::Duration;

use criterion::Criterion;

/// Short runs: a 300 ms warm-up, one second of measurement, 30 samples. Enough for the
/// per-event figures docs/benchmarks.md records (their noise is a few percent here).
pub(crate) fn short_runs() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
}
