"""What the Python check scripts share: storage options for a lake URI (Azurite's development
account for `az://` / `abfs…` URIs, nothing for local paths) and a clean way out of the process."""
import os
import sys

DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def storage_options(uri: str) -> dict:
    if not uri.startswith(("az://", "abfs")):
        return {}
    return {
        "account_name": "devstoreaccount1",
        "account_key": DEV_KEY,
        "use_emulator": "true",
        "allow_http": "true",
        "azure_storage_endpoint": f"http://127.0.0.1:{os.environ.get('AZURITE_PORT', '10000')}/devstoreaccount1",
    }


def leave() -> None:
    """deltalake 1.6.6 (Python) sometimes aborts in its thread teardown at interpreter exit
    ("terminate called without an active exception") after all work is done: leave first."""
    sys.stdout.flush()
    os._exit(0)
