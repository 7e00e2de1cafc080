"""Independent reader check: opens a Delta table with the Python `deltalake` package (not orderlake's
code), asserts the protocol is reader 1 / writer 2 with no extra features, that every add action
carries column statistics, and prints the sum of a decimal money column in cents.

usage: check_delta.py TABLE_URI MONEY_COLUMN
"""
import os
import sys
from decimal import Decimal

from deltalake import DeltaTable

DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main() -> None:
    uri, money = sys.argv[1], sys.argv[2]
    opts = {}
    if uri.startswith(("az://", "abfs")):
        opts = {
            "account_name": "devstoreaccount1",
            "account_key": DEV_KEY,
            "use_emulator": "true",
            "allow_http": "true",
            "azure_storage_endpoint": f"http://127.0.0.1:{os.environ.get('AZURITE_PORT', '10000')}/devstoreaccount1",
        }
    dt = DeltaTable(uri, storage_options=opts)
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
    # deltalake 1.6.6 (Python) sometimes aborts in its thread teardown at interpreter exit
    # ("terminate called without an active exception") after all work is done: leave first.
    sys.stdout.flush()
    os._exit(0)
