// Preloaded into Azurite's blob server (`node --require`) by start.sh: fixes for stalls that
// every request in flight waited out, so that tests and benchmarks measure orderlake, not them.
//
// 1. Deletes. Azurite removes metadata with LokiJS' `findAndRemove`, which rebuilds every binary
//    index of the collection on each call, even when nothing matched (a block-list commit removes
//    the blob's uncommitted blocks, usually none). With a few thousand blobs that is 5–10 ms per
//    delete, during which Azurite serves nothing: removing a freshness benchmark's 4,414 blobs
//    took 56 s. Here a call that matches a few documents removes them one by one (LokiJS then
//    updates its indexes in place) and one that matches none does nothing; many matches (a whole
//    container) keep the batch removal.
// 2. Garbage collection. Deleted blobs' memory is freed by a mark-and-sweep pass every 10 minutes,
//    each freed extent one such delete: 12 s for 1,440 extents, and up to 30 s seen (requests
//    timed out in orderlake, freshness percentiles measured Azurite). Passes run every
//    ORDERLAKE_AZURITE_GC_SECONDS (default 30) instead, so each frees little; a pass that takes
//    more than 100 ms is logged to azurite.log, so a stall in a test or benchmark can be told from
//    one of orderlake's.
// 3. The age of new extents. A pass spares extents written in the last 10 minutes, whose blob may
//    not be committed yet, by their `LastModifyInMS`; a new extent is stored with
//    `lastModifiedInMS` instead, so it was never spared (Azure/Azurite#709: a blob written while
//    a pass runs loses its data). Passes every 30 s would make that 20 times likelier; new
//    extents now carry the field the pass reads.
//
// None of this is an option of Azurite's command line. If a later Azurite moves what is patched,
// this says so in azurite.log and that part runs as it comes. `node azurite-preload.js --check
// <azurite-blob>` checks every fix against the installed Azurite (the integration tests run it).
"use strict";
const fs = require("fs");
const path = require("path");

const say = (line) => console.error(`${new Date().toISOString()} [orderlake] ${line}`);
const checking = require.main === module;
const main = checking ? process.argv[3] : process.argv[1];
if (checking && (process.argv[2] !== "--check" || !main)) {
  console.error("usage: node azurite-preload.js --check <path of azurite-blob>");
  process.exit(2);
}
const blobDir = path.dirname(fs.realpathSync(main));
const PATCHED = Symbol.for("orderlake.azurite-preload");
const failed = [];

function patch(what, apply) {
  try {
    apply();
  } catch (e) {
    failed.push(what);
    say(`azurite ${what} not changed (${e.message}); Azurite's own applies`);
  }
}

function mark(fn) {
  fn[PATCHED] = true;
  return fn;
}

patch("deletes", () => {
  const loki = require(require.resolve("lokijs", { paths: [blobDir] }));
  const batch = loki.Collection.prototype.findAndRemove;
  if (typeof batch !== "function") throw new Error("lokijs Collection.findAndRemove not found");
  loki.Collection.prototype.findAndRemove = mark(function (filter) {
    const docs = this.find(filter);
    if (docs.length > 16) return batch.call(this, filter);
    for (const doc of docs) this.remove(doc);
  });
});

patch("extent ages", () => {
  const file = path.join(blobDir, "..", "common", "persistence", "LokiExtentMetadataStore.js");
  const { default: Extents } = require(file);
  const update = Extents.prototype.updateExtent;
  if (typeof update !== "function") throw new Error("LokiExtentMetadataStore.updateExtent not found");
  Extents.prototype.updateExtent = mark(function (extent) {
    if (extent.LastModifyInMS === undefined) extent.LastModifyInMS = extent.lastModifiedInMS ?? Date.now();
    return update.call(this, extent);
  });
});

patch("gc schedule", () => {
  const { default: Gc } = require(path.join(blobDir, "gc", "BlobGCManager.js"));
  const seconds = Number(process.env.ORDERLAKE_AZURITE_GC_SECONDS || "30");
  if (!(seconds > 0)) throw new Error(`ORDERLAKE_AZURITE_GC_SECONDS=${process.env.ORDERLAKE_AZURITE_GC_SECONDS}: expected seconds > 0`);
  const markSweep = Gc.prototype.markSweep;
  if (typeof markSweep !== "function") throw new Error("BlobGCManager.markSweep not found");
  Gc.prototype.markSweep = mark(async function () {
    // Read by the loop once this pass is done, for the sleep before the next.
    this.gcIntervalInMS = seconds * 1000;
    const store = this.extentStore;
    const sweep = store.deleteExtents;
    const t = { freed: 0, sweep: 0 };
    store.deleteExtents = async (ids) => {
      const started = Date.now();
      t.freed = ids.size;
      try {
        return await sweep.call(store, ids);
      } finally {
        t.sweep = Date.now() - started;
      }
    };
    const started = Date.now();
    try {
      await markSweep.call(this);
    } finally {
      store.deleteExtents = sweep;
    }
    const ms = Date.now() - started;
    if (ms > 100) say(`azurite gc pass took ${ms} ms (${t.freed} extents freed in ${t.sweep} ms)`);
  });
});

// The checks: each fix applied, and doing what it is for on the installed Azurite's own classes.
async function check() {
  const loki = require(require.resolve("lokijs", { paths: [blobDir] }));
  if (!loki.Collection.prototype.findAndRemove[PATCHED]) failed.push("deletes");
  const coll = new loki("check", { persistenceMethod: "memory" }).addCollection("c", { indices: ["id", "g"] });
  for (let i = 0; i < 40; i++) coll.insert({ id: `e${i}`, g: i % 2 });
  coll.findAndRemove({ id: "e3" });
  coll.findAndRemove({ id: "absent" });
  coll.findAndRemove({ g: 0 });
  const left = coll.find({ g: 1 }).map((d) => d.id);
  if (left.length !== 19 || left.includes("e3")) failed.push(`deletes removed the wrong documents: ${left}`);

  const { default: Extents } = require(path.join(blobDir, "..", "common", "persistence", "LokiExtentMetadataStore.js"));
  const extents = new Extents(path.join(require("os").tmpdir(), "orderlake-preload-check.db"), true);
  await extents.init();
  await extents.updateExtent({ id: "new", locationId: "memory", path: "new", size: 1, lastModifiedInMS: Date.now() });
  const [young] = await extents.listExtents(undefined, 10, undefined, new Date(), 10 * 60 * 1000);
  const [all] = await extents.listExtents(undefined, 10, undefined, new Date(Date.now() + 1), 0);
  if (young.length !== 0 || all.length !== 1) {
    failed.push(`a new extent is not spared by the gc (${young.length} of ${all.length} collectable)`);
  }

  const { default: Gc } = require(path.join(blobDir, "gc", "BlobGCManager.js"));
  if (!Gc.prototype.markSweep[PATCHED]) failed.push("gc schedule");
  if (!Extents.prototype.updateExtent[PATCHED]) failed.push("extent ages");
  if (failed.length) {
    console.error(`azurite-preload: ${[...new Set(failed)].join("; ")}`);
    process.exit(1);
  }
  console.log("azurite-preload: deletes, extent ages and gc schedule patched");
}

if (checking) {
  check().catch((e) => {
    console.error(`azurite-preload: check failed: ${e.stack}`);
    process.exit(1);
  });
}
