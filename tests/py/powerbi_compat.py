"""Power BI reader check: opens a Delta table with the Python `deltalake` package and asserts it
stays within what Power BI's `DeltaLake.Table` connector reads: protocol reader 1 / writer 2 with
no table features (so no deletion vectors, no column mapping), statistics in every add action,
and only column types the connector maps (string, long/int, decimal, date, timestamp, boolean,
double). The checkpoint is checked by the calling test.

usage: powerbi_compat.py TABLE_URI [TABLE_URI ...]
"""
import json
import sys

from deltalake import DeltaTable

from lake_access import leave, storage_options
SUPPORTED = ("string", "long", "integer", "short", "byte", "boolean", "double", "float", "date", "timestamp")


def check(uri):
    dt = DeltaTable(uri, storage_options=storage_options(uri))
    p = dt.protocol()
    assert (p.min_reader_version, p.min_writer_version) == (1, 2), f"{uri}: protocol {p}"
    assert not p.reader_features and not p.writer_features, f"{uri}: table features {p}"
    config = dt.metadata().configuration
    for key in ("delta.enableDeletionVectors", "delta.columnMapping.mode"):
        assert config.get(key) in (None, "false", "none"), f"{uri}: {key}={config.get(key)}"
    schema = json.loads(dt.schema().to_json())
    for field in schema["fields"]:
        t = field["type"]
        ok = isinstance(t, str) and (t in SUPPORTED or t.startswith("decimal("))
        assert ok, f"{uri}: column {field['name']} has type {t}, which Power BI does not map"
    adds = dt.get_add_actions(flatten=True)
    cols = adds.schema.names if hasattr(adds, "schema") else list(adds.columns)
    assert "num_records" in cols and any(c.startswith("min.") for c in cols), f"{uri}: statistics missing"
    print(f"ok {uri} version={dt.version()} files={len(dt.file_uris())}")


if __name__ == "__main__":
    for u in sys.argv[1:]:
        check(u)
    leave()
