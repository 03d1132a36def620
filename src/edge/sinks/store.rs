//! A sink's durable file, `<data-dir>/sinks/<id>.json`: its cursor (the seq of the last
//! acknowledged batch's end, and the epoch it belongs to), whether it is paused, and for
//! a sink made by the API its definition with its secret (hence mode 0600).
//!
//! Written whole, to a temp name, synced, renamed and the directory synced, so a crash
//! leaves the old file or the new one, never half of one. Blocking IO: callers run it
//! off the async workers.
//!
//! [`Cursors`] is where a sink's place is kept: these files on a single node, the
//! cluster's shared bucket (`cluster::sinks`) in cluster mode. The delivery task writes
//! through it alike in both.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where the sinks' cursors (and the API's definitions) are kept.
pub enum Cursors {
    /// `<data-dir>/sinks`, one file a sink.
    Files(PathBuf),
    /// The cluster's `<stream>-sinks` bucket, shared by every node.
    Shared(std::sync::Arc<crate::cluster::sinks::SharedSinks>),
}

/// The folder of the sinks' files inside the data directory.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("sinks")
}

/// What a sink's file holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SinkFile {
    pub id: String,
    /// Every event up to this seq was acknowledged (or was not selected).
    pub cursor: u64,
    /// The epoch `cursor` is a seq of.
    pub epoch: String,
    pub paused: bool,
    /// The definition of a sink made by `POST /v1/sinks`, secret included; none for a
    /// sink of the config file, whose definition stays there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
}

fn path_of(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Writes `file` atomically (see the module doc).
pub fn write(dir: &Path, file: &SinkFile) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    let path = path_of(dir, &file.id);
    let temp = dir.join(format!(".{}.json.tmp", file.id));
    let text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        out.write_all(&text)?;
        out.sync_all()?;
    }
    fs::rename(&temp, &path)?;
    fs::File::open(dir)?.sync_all()
}

/// Removes a deleted sink's file.
pub fn remove(dir: &Path, id: &str) -> std::io::Result<()> {
    match fs::remove_file(path_of(dir, id)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => fs::File::open(dir)?.sync_all(),
    }
}

/// Every sink file in `dir`, by id; a file that does not read is an error naming it, so a
/// damaged cursor is never silently replaced by the head.
pub fn read_all(dir: &Path) -> Result<Vec<SinkFile>, String> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.display())),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .path();
        let is_sink = path.extension().is_some_and(|e| e == "json")
            && !path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !is_sink {
            continue;
        }
        let text = fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: SinkFile = serde_json::from_slice(&text)
            .map_err(|e| format!("{} is not a sink file: {e}", path.display()))?;
        files.push(file);
    }
    files.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_file_is_written_whole_private_and_read_back() {
        let data = tempfile::tempdir().unwrap();
        let dir = dir(data.path());
        let file = SinkFile {
            id: "analytics".into(),
            cursor: 42,
            epoch: "e1".into(),
            paused: false,
            definition: Some(serde_json::json!({"secret": "whsec_x"})),
        };
        write(&dir, &file).unwrap();
        write(
            &dir,
            &SinkFile {
                cursor: 43,
                ..file.clone()
            },
        )
        .unwrap();
        let mode = fs::metadata(dir.join("analytics.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            read_all(&dir).unwrap(),
            vec![SinkFile { cursor: 43, ..file }]
        );
        remove(&dir, "analytics").unwrap();
        assert_eq!(read_all(&dir).unwrap(), vec![]);
    }
}
