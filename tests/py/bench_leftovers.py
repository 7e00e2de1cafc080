"""What a bench run left behind: blobs in its container and MongoDB databases of its run.

usage: bench_leftovers.py CONTAINER MONGODB_URI DATABASE_PREFIX
prints one line: `blobs=N databases=N`
"""
import os
import sys

from pymongo import MongoClient

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "infra", "local"))
from azure_container import client  # noqa: E402


def main() -> None:
    container, uri, db_prefix = sys.argv[1:4]
    blobs = sum(1 for _ in client().get_container_client(container).list_blobs())
    databases = [d for d in MongoClient(uri).list_database_names() if d.startswith(db_prefix)]
    print(f"blobs={blobs} databases={len(databases)}")
    if databases:
        print(f"left: {databases}", file=sys.stderr)


if __name__ == "__main__":
    main()
