"""Where the orderlake lake is and how to open it, shared by the notebooks.

The notebooks read the same environment as `orderlake` itself, so a notebook started from a shell
that ran `source infra/local/env.sh && use_local_stack` (or `make notebooks`) reads the demo lake on
Azurite, and one started with production variables reads ADLS Gen2:

  ORDERLAKE_LAKE               az://<container>/<path>, abfss://..., a local path or file://...
                               (default az://orderlake-demo/lake, what `make demo` builds)
  AZURE_STORAGE_ACCOUNT_NAME   the storage account
  AZURE_STORAGE_ACCOUNT_KEY    its key; without one, DuckDB uses the Azure credential chain and
                               delta-rs a managed identity (or `az login` with AZURE_USE_AZURE_CLI=true)
  AZURE_STORAGE_USE_EMULATOR   true for Azurite (AZURITE_PORT, default 10000)
"""
import os
from urllib.parse import urlparse

AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def lake_uri() -> str:
    uri = os.environ.get("ORDERLAKE_LAKE", "az://orderlake-demo/lake").rstrip("/")
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _emulator() -> bool:
    return os.environ.get("AZURE_STORAGE_USE_EMULATOR", "").lower() in ("1", "true", "yes")


def is_azure() -> bool:
    return urlparse(lake_uri()).scheme in ("az", "azure", "abfs", "abfss")


def table_uri(name: str) -> str:
    """`gold/daily_sales` → the table's full URI."""
    return f"{lake_uri()}/{name}"


def _account() -> str:
    return os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")


def _account_key():
    return os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or (AZURITE_KEY if _emulator() else None)


def storage_options() -> dict:
    """Options for polars `scan_delta` and `deltalake.DeltaTable`."""
    if not is_azure():
        return {}
    opts = {"account_name": _account()}
    key = _account_key()
    if key:
        opts["account_key"] = key
    if _emulator():
        opts.update(use_emulator="true", allow_http="true")
    elif not key and os.environ.get("AZURE_USE_AZURE_CLI", "").lower() == "true":
        opts["use_azure_cli"] = "true"
    return opts


def duckdb_connection():
    """A DuckDB connection with the delta and azure extensions loaded from their PyPI packages
    (no download from extensions.duckdb.org) and a secret for the lake's storage account."""
    import duckdb
    from duckdb_extensions import import_extension

    con = duckdb.connect()
    for ext in ("azure", "delta"):
        import_extension(ext, con=con)
        con.sql(f"LOAD {ext}")
    if is_azure():
        account, key = _account(), _account_key()
        if _emulator():
            port = os.environ.get("AZURITE_PORT", "10000")
            conn = (f"DefaultEndpointsProtocol=http;AccountName={account};AccountKey={key};"
                    f"BlobEndpoint=http://127.0.0.1:{port}/{account};")
            con.sql(f"CREATE SECRET lake (TYPE azure, CONNECTION_STRING '{conn}')")
        elif key:
            conn = f"DefaultEndpointsProtocol=https;AccountName={account};AccountKey={key};EndpointSuffix=core.windows.net"
            con.sql(f"CREATE SECRET lake (TYPE azure, CONNECTION_STRING '{conn}')")
        else:
            con.sql(f"CREATE SECRET lake (TYPE azure, PROVIDER credential_chain, ACCOUNT_NAME '{account}')")
    return con


def check() -> str:
    """Fails with what to do when the lake has no gold tables yet; returns the lake's URI."""
    from deltalake import DeltaTable

    uri = table_uri("gold/daily_sales")
    try:
        DeltaTable(uri, storage_options=storage_options())
    except Exception as e:  # delta-rs raises several types for "not there" and "cannot reach"
        raise RuntimeError(
            f"no gold tables at {lake_uri()} ({type(e).__name__}: {e}).\n"
            "Run `make demo` first (it starts the local stack and builds az://orderlake-demo/lake), or point "
            "ORDERLAKE_LAKE and AZURE_STORAGE_* at your lake (see notebooks/README.md)."
        ) from None
    return lake_uri()


def delta_scan(name: str) -> str:
    """SQL for a table in DuckDB: `FROM {delta_scan('gold/daily_sales')}`."""
    return f"delta_scan('{table_uri(name)}')"
