"""Creates (or checks) a blob container on Azurite or Azure: `azure_container.py NAME [--delete]`.

delta-rs writes into an existing container but never creates one, so the demo and the tests make
theirs here. Credentials: AZURE_STORAGE_CONNECTION_STRING, or Azurite's well-known development
account on 127.0.0.1:${AZURITE_PORT:-10000}.
"""
import os
import sys

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def client() -> BlobServiceClient:
    conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if not conn:
        port = os.environ.get("AZURITE_PORT", "10000")
        conn = (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={DEV_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
        )
    return BlobServiceClient.from_connection_string(conn)


def main() -> None:
    name = sys.argv[1]
    svc = client()
    if "--delete" in sys.argv:
        try:
            svc.delete_container(name)
        except ResourceNotFoundError:
            pass
        return
    try:
        svc.create_container(name)
        print(f"created container {name}")
    except ResourceExistsError:
        print(f"container {name} exists")


if __name__ == "__main__":
    main()
