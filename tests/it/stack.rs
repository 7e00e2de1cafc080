//! The local stack's fixes to the servers themselves: Azurite starts with
//! `infra/local/azurite-preload.js` (deletes without index rebuilds, short garbage-collection
//! passes that spare new extents). An Azurite upgrade that moves what it patches must fail here,
//! not show up later as multi-second stalls in a benchmark.

use std::process::Command;

use crate::support::{cache_dir, repo_root};

#[test]
fn the_azurite_preload_applies_to_the_installed_azurite() {
    let azurite = cache_dir().join("node/node_modules/.bin/azurite-blob");
    let out = Command::new("node")
        .arg(repo_root().join("infra/local/azurite-preload.js"))
        .arg("--check")
        .arg(&azurite)
        .output()
        .expect("run node");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "azurite-preload.js --check {}: {stdout}{stderr}", azurite.display());
    assert!(stdout.contains("deletes, extent ages and gc schedule patched"), "{stdout}");
}
