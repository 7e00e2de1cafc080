"""Another writer in another process: appends one bronze row with the Python `deltalake` package,
for a partition offset recorded in the same commit as a `txn` action (as orderlake records its own).

usage: append_bronze.py TABLE_URI APP_ID PARTITION OFFSET   (prints the table's new version)
"""
import sys

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from lake_access import leave, storage_options


def main() -> None:
    uri, app_id, partition, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    opts = storage_options(uri)
    # One existing row as the template: the schema and the partition column come with it.
    row = DeltaTable(uri, storage_options=opts).to_pyarrow_table().slice(0, 1)
    for name, value, kind in (("partition", partition, pa.int32()), ("offset", offset, pa.int64())):
        row = row.set_column(row.schema.get_field_index(name), name, pa.array([value], kind))
    props = CommitProperties(app_transactions=[Transaction(app_id=app_id, version=offset)])
    write_deltalake(uri, row, mode="append", storage_options=opts, commit_properties=props)
    print(DeltaTable(uri, storage_options=opts).version())


if __name__ == "__main__":
    main()
    leave()
