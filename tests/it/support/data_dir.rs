//! What a data directory holds, for tests that damage it or check what a stop left.

use std::fs;
use std::path::{Path, PathBuf};

/// The log segments of the data directory `dir`, oldest first.
pub(crate) fn wal_segments(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    segments
}

/// Every `.tmp` file in a data directory and its snapshot directory.
pub(crate) fn temp_files(dir: &Path) -> Vec<PathBuf> {
    [dir.to_path_buf(), dir.join("snapshots")]
        .iter()
        .filter_map(|d| fs::read_dir(d).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tmp"))
        .collect()
}
