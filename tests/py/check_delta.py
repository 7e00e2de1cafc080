"""Independent reader check: opens a Delta table with the Python `deltalake` package (not orderlake's
code), asserts the protocol is reader 1 / writer 2 with no extra features, that every add action
carries column statistics, and prints the sum of a decimal money column in cents.

usage: check_delta.py TABLE_URI MONEY_COLUMN
"""
import sys
from decimal import Decimal

from deltalake import DeltaTable

from lake_access import leave, storage_options


def main() -> None:
    uri, money = sys.argv[1], sys.argv[2]
    dt = DeltaTable(uri, storage_options=storage_options(uri))
    p = dt.protocol()
    assert (p.min_reader_version, p.min_writer_version) == (1, 2), f"protocol {p}"
    assert not p.reader_features and not p.writer_features, f"features {p}"
    adds = dt.get_add_actions(flatten=True)
    cols = adds.schema.names if hasattr(adds, "schema") else list(adds.columns)
    assert "num_records" in cols, cols
    assert any(c.startswith("min.") for c in cols), f"no min statistics in {cols}"
    assert any(c.startswith("max.") for c in cols), f"no max statistics in {cols}"
    table = dt.to_pyarrow_table()
    total = sum((v for v in table.column(money).to_pylist() if v is not None), Decimal(0))
    print(f"version={dt.version()} rows={table.num_rows} files={len(dt.file_uris())}")
    print(f"sum_cents={int(total * 100)}")


if __name__ == "__main__":
    main()
    leave()
