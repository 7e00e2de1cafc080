// Preloaded into Azurite's blob server (`node --require`) by start.sh: two fixes for stalls that
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
//
// Neither is an option of Azurite's command line. If a later Azurite moves what is patched, this
// says so in azurite.log and Azurite runs as it comes.
"use strict";
const fs = require("fs");
const path = require("path");

const say = (line) => console.error(`${new Date().toISOString()} [orderlake] ${line}`);
const blobDir = path.dirname(fs.realpathSync(process.argv[1]));

try {
  const loki = require(require.resolve("lokijs", { paths: [blobDir] }));
  const batch = loki.Collection.prototype.findAndRemove;
  if (typeof batch !== "function") throw new Error("lokijs Collection.findAndRemove not found");
  loki.Collection.prototype.findAndRemove = function (filter) {
    const docs = this.find(filter);
    if (docs.length > 16) return batch.call(this, filter);
    for (const doc of docs) this.remove(doc);
  };
} catch (e) {
  say(`azurite deletes not changed (${e.message})`);
}

try {
  const { default: Gc } = require(path.join(blobDir, "gc", "BlobGCManager.js"));
  const seconds = Number(process.env.ORDERLAKE_AZURITE_GC_SECONDS || "30");
  if (!(seconds > 0)) throw new Error(`ORDERLAKE_AZURITE_GC_SECONDS=${process.env.ORDERLAKE_AZURITE_GC_SECONDS}: expected seconds > 0`);
  const markSweep = Gc.prototype.markSweep;
  if (typeof markSweep !== "function") throw new Error("BlobGCManager.markSweep not found");
  Gc.prototype.markSweep = async function () {
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
  };
} catch (e) {
  say(`azurite gc schedule not changed (${e.message}); Azurite's own applies`);
}
