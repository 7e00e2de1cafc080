//! The `txn` progress markers of each table, remembered per table version.
//!
//! delta-kernel answers "which version did app X record" by replaying the log from the last
//! checkpoint (the checkpoint Parquet and up to ten JSON commits) on every call, and a batch asks a
//! dozen times per table: on Azurite that was most of a small batch's storage requests. A
//! version's markers never change, so they are kept here; when the table has moved on, only the
//! commits since the remembered version are read (one small GET each) instead of the whole replay.

use std::collections::HashMap;
use std::sync::Mutex;

use deltalake::DeltaTable;

use crate::error::Result;

/// Further than this behind, the kernel's replay (which starts at a checkpoint) reads less.
const MAX_COMMITS_TO_READ: u64 = 10;

/// What is known of one table's markers at one version (absent app = not asked yet).
#[derive(Debug, Default)]
struct Known {
    version: u64,
    apps: HashMap<String, Option<i64>>,
}

/// Markers by table URI. Clones of a [`super::Lake`] share one.
#[derive(Debug, Default)]
pub struct Markers {
    tables: Mutex<HashMap<String, Known>>,
}

impl Markers {
    /// The last version `app_id` recorded in `table`, as of the table's loaded version.
    pub async fn get(&self, table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
        let uri = table.table_url().to_string();
        let version = super::version_of(table);
        let behind = {
            let map = self.tables.lock().expect("markers");
            match map.get(&uri) {
                Some(k) if k.version == version => match k.apps.get(app_id) {
                    Some(m) => return Ok(*m),
                    None => None,
                },
                Some(k) if k.version < version && version - k.version <= MAX_COMMITS_TO_READ => Some(k.version),
                _ => None,
            }
        };
        if let Some(from) = behind
            && let Some(txns) = read_txns(table, from + 1, version).await?
        {
            let mut map = self.tables.lock().expect("markers");
            if let Some(k) = map.get_mut(&uri).filter(|k| k.version == from) {
                // A later commit's marker replaces an earlier one, whatever was known before.
                for (app, v) in txns {
                    k.apps.insert(app, Some(v));
                }
                k.version = version;
                if let Some(m) = k.apps.get(app_id) {
                    return Ok(*m);
                }
            }
        }
        let m = table.snapshot()?.transaction_version(table.log_store().as_ref(), app_id).await?;
        let mut map = self.tables.lock().expect("markers");
        let k = map.entry(uri).or_default();
        if k.version != version {
            if k.version > version {
                return Ok(m); // an older snapshot than the one remembered: answer, keep the newer
            }
            *k = Known { version, apps: HashMap::new() };
        }
        k.apps.insert(app_id.to_string(), m);
        Ok(m)
    }
}

/// The `txn` actions of commits `from..=to`, in order; `None` when one of them cannot be read
/// (cleaned up by log retention), and the caller replays the log instead.
async fn read_txns(table: &DeltaTable, from: u64, to: u64) -> Result<Option<Vec<(String, i64)>>> {
    let store = table.log_store();
    let mut out = Vec::new();
    for v in from..=to {
        let Some(bytes) = store.read_commit_entry(v).await? else { return Ok(None) };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            out.extend(txn_of(line));
        }
    }
    Ok(Some(out))
}

/// How far back [`commits_of`] reads the log before it gives up.
const MAX_COMMITS_TO_WALK: u64 = 10_000;

/// What a walk back through a table's log found.
pub struct Walked {
    /// The commits in which the app recorded a marker past `after`, as `(version, marker)`,
    /// newest first.
    pub commits: Vec<(u64, i64)>,
    /// Whether those are all of them; if not, the log no longer reaches back to the first such
    /// commit, and `commits` are the newest of them.
    pub reached: bool,
}

/// The commits of `table` in which `app_id` recorded a marker past `after`, found by reading the
/// log back from the table's version until a commit of `app_id` at or below `after`, the first
/// commit, or version `above` (exclusive: the caller knows the commits up to it), but no further
/// than [`MAX_COMMITS_TO_WALK`] commits.
pub async fn commits_of(table: &DeltaTable, app_id: &str, after: i64, above: Option<u64>) -> Result<Walked> {
    let store = table.log_store();
    let newest = super::version_of(table);
    let mut commits = Vec::new();
    let lowest = above.map_or(0, |a| a + 1);
    if newest < lowest {
        return Ok(Walked { commits, reached: true });
    }
    for v in (newest.saturating_sub(MAX_COMMITS_TO_WALK).max(lowest)..=newest).rev() {
        let Some(bytes) = store.read_commit_entry(v).await? else { break };
        match bytes.split(|b| *b == b'\n').filter_map(txn_of).find(|(app, _)| app == app_id) {
            Some((_, marker)) if marker <= after => return Ok(Walked { commits, reached: true }),
            Some((_, marker)) => commits.push((v, marker)),
            None => {}
        }
        if v == lowest {
            return Ok(Walked { commits, reached: true });
        }
    }
    Ok(Walked { commits, reached: false })
}

/// `(appId, version)` when a log line is a `txn` action. Lines are parsed only when they can be
/// one: a commit's `add` lines carry statistics and are most of its bytes (inside them, quotes are
/// escaped, so `"txn"` cannot occur).
pub(crate) fn txn_of(line: &[u8]) -> Option<(String, i64)> {
    if !line.windows(5).any(|w| w == b"\"txn\"") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Line {
        txn: Option<Txn>,
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Txn {
        app_id: String,
        version: i64,
    }
    serde_json::from_slice::<Line>(line).ok()?.txn.map(|t| (t.app_id, t.version))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_txn_lines_are_markers() {
        let txn = br#"{"txn":{"appId":"g/t/0","version":41,"lastUpdated":1}}"#;
        assert_eq!(txn_of(txn), Some(("g/t/0".to_string(), 41)));
        let spaced = br#"{ "txn" : { "appId" : "g/t/1", "version" : 7 } }"#;
        assert_eq!(txn_of(spaced), Some(("g/t/1".to_string(), 7)));
        assert_eq!(txn_of(br#"{"add":{"path":"x.parquet","stats":"{\"txn\":1}"}}"#), None);
        assert_eq!(txn_of(br#"{"commitInfo":{"txn":{"appId":"a","version":1}}}"#), None);
    }
}
