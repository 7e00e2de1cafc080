"""Another writer in another process: appends one bronze row with the Python `deltalake` package,
for a partition offset recorded in the same commit as a `txn` action (as orderlake records its own).

usage: append_bronze.py TABLE_URI APP_ID PARTITION OFFSET   (prints the table's new version)
"""
import os
import sys

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def main() -> None:
    uri, app_id, partition, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    opts = {
        "account_name": "devstoreaccount1",
        "account_key": DEV_KEY,
        "use_emulator": "true",
        "allow_http": "true",
        "azure_storage_endpoint": f"http://127.0.0.1:{os.environ.get('AZURITE_PORT', '10000')}/devstoreaccount1",
    }
    # One existing row as the template: the schema and the partition column come with it.
    row = DeltaTable(uri, storage_options=opts).to_pyarrow_table().slice(0, 1)
    for name, value, kind in (("partition", partition, pa.int32()), ("offset", offset, pa.int64())):
        row = row.set_column(row.schema.get_field_index(name), name, pa.array([value], kind))
    props = CommitProperties(app_transactions=[Transaction(app_id=app_id, version=offset)])
    write_deltalake(uri, row, mode="append", storage_options=opts, commit_properties=props)
    print(DeltaTable(uri, storage_options=opts).version())


if __name__ == "__main__":
    main()
