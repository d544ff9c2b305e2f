"""Which Azure storage account an az:// or abfs:// out_dir is, and with which credential.

In this order, the first that is set wins: the [store] azure_* settings (also from files:
AEP_EXPORT_STORE__AZURE_ACCOUNT_KEY_FILE=/run/secrets/…), then the variables Azure's own tools
read: AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_KEY or
AZURE_STORAGE_SAS_TOKEN; with none of them, DefaultAzureCredential (workload identity in AKS,
managed identity, the Azure CLI's login), whose package is imported only then. Every secret is
registered with the log masking before any request is made.
"""

from __future__ import annotations

# The `azure` namespace comes from the azure-storage-blob and azure-identity distributions
# ([project] dependencies in pyproject.toml); imported inside functions, only for az:// / abfs://.
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import StoreSettings, StoreURL
from ..errors import ConfigError
from ..masking import register_secret

# Azurite's documented development account (UseDevelopmentStorage=true): not a secret
_DEV_ACCOUNT = "devstoreaccount1"
_DEV_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass(frozen=True)
class AzureAccess:
    account: str
    endpoint: str  # the Blob service's URL for the account, e.g. https://acct.blob.core.windows.net
    key: str = ""  # an account key (Shared Key)
    sas: str = ""  # a SAS token, without the leading "?"
    source: str = "DefaultAzureCredential"  # where the credential came from (for messages; never the value)

    @property
    def uses_identity(self) -> bool:
        return not (self.key or self.sas)


def resolve_access(url: StoreURL, store: StoreSettings | None = None, environ: Mapping[str, str] | None = None) -> AzureAccess:
    env = os.environ if environ is None else environ
    conn = (store.azure_connection_string.get_secret_value() if store else "") or env.get("AZURE_STORAGE_CONNECTION_STRING", "")
    if conn:
        source = "store.azure_connection_string" if store and store.azure_connection_string.get_secret_value() else \
            "AZURE_STORAGE_CONNECTION_STRING"
        return _checked(url, _from_connection_string(conn, source))
    account = url.account or (store.azure_account_name if store else "") or env.get("AZURE_STORAGE_ACCOUNT_NAME", "")
    if not account:
        raise ConfigError(f"no Azure storage account for {url}: set AZURE_STORAGE_CONNECTION_STRING, or "
                          "AZURE_STORAGE_ACCOUNT_NAME (or store.azure_account_name), or use an abfs:// URL that names it")
    endpoint = f"https://{account}.blob.core.windows.net"
    for setting, variable, field in (("store.azure_account_key", "AZURE_STORAGE_KEY", "key"),
                                     ("store.azure_sas_token", "AZURE_STORAGE_SAS_TOKEN", "sas")):
        mine = getattr(store, setting.removeprefix("store."), None) if store else None
        value = mine.get_secret_value() if mine is not None else ""
        found, source = (value, setting) if value else (env.get(variable, ""), variable)
        if found:
            register_secret(found)
            return AzureAccess(account, endpoint, source=source, **{field: found.lstrip("?")})
    return AzureAccess(account, endpoint)


def _from_connection_string(text: str, source: str) -> AzureAccess:
    register_secret(text)
    parts: dict[str, str] = {}
    for item in text.split(";"):
        name, eq, value = item.strip().partition("=")
        if eq:
            parts[name.strip().lower()] = value.strip()
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        return AzureAccess(_DEV_ACCOUNT, f"http://127.0.0.1:10000/{_DEV_ACCOUNT}", key=_DEV_KEY, source=source)
    account = parts.get("accountname", "")
    endpoint = parts.get("blobendpoint", "").rstrip("/")
    if not endpoint and account:
        protocol = parts.get("defaultendpointsprotocol", "https")
        endpoint = f"{protocol}://{account}.blob.{parts.get('endpointsuffix', 'core.windows.net')}"
    if not endpoint:
        raise ConfigError(f"{source} names no account (AccountName=) and no BlobEndpoint=")
    key, sas = parts.get("accountkey", ""), parts.get("sharedaccesssignature", "").lstrip("?")
    for secret in (key, sas):
        register_secret(secret)
    if not account:  # a SAS connection string may give only the endpoint
        account = endpoint.split("://", 1)[-1].split(".")[0].split("/")[0]
    return AzureAccess(account, endpoint, key=key, sas=sas, source=source)


def _checked(url: StoreURL, access: AzureAccess) -> AzureAccess:
    if url.account and url.account != access.account:
        raise ConfigError(f"{url} names the account {url.account}, but {access.source} is for {access.account}")
    return access


def client_credential(access: AzureAccess) -> Any:
    """The credential for azure-storage-blob's client (an async token credential when neither key nor SAS)."""
    if access.key:
        from azure.core.credentials import AzureNamedKeyCredential

        return AzureNamedKeyCredential(access.account, access.key)
    if access.sas:
        from azure.core.credentials import AzureSasCredential

        return AzureSasCredential(access.sas)
    from azure.identity.aio import DefaultAzureCredential  # imported only when no key or SAS is given

    return DefaultAzureCredential()
