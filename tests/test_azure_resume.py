"""Azure Blob in-process (Azurite): the crash windows a kill rarely hits, blocks a dead pod staged,
leftovers, and where the credentials come from (verify and inventory on a prefix: tests/test_stores.py)."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from azurite import AzuriteServer
from conftest import run_export
from objectstores import PART, object_name, one_batch_of, store_settings

from engine.config import ExportSettings, StoreSettings, StoreURL
from engine.errors import ConfigError
from engine.masking import mask
from engine.output.azure import block_id
from engine.output.azure_access import resolve_access
from engine.output.objectstore import staging_key


@pytest.fixture
def az(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> tuple[AzuriteServer, str]:
    """AZURE_STORAGE_CONNECTION_STRING pointing at the server, and a fresh container."""
    for key, value in azurite.env().items():
        monkeypatch.setenv(key, value)
    name = f"aep-{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    return azurite, name


def assert_exported(azurite: AzuriteServer, container: str, prefix: str, expected: list) -> None:
    for e in expected:
        assert hashlib.sha256(azurite.read(container, object_name(prefix, e))).hexdigest() == e.sha256
        assert azurite.metadata(container, object_name(prefix, e))["aep_export_sha256"] == e.sha256
    assert azurite.uncommitted(container) == {}
    assert not [n for n in azurite.blobs(container) if "/.aep-export/" in n]


async def test_a_staging_blob_committed_but_never_copied_is_checked_and_copied_without_fetching(az, make_fake) -> None:
    azurite, container = az
    async with make_fake(one_batch_of(91)) as fp:
        expected = fp.expected_files()
        assert (await run_export(store_settings(fp, f"az://{container}/p"))).exit_code == 0
        victim = expected[0]
        data = azurite.read(container, object_name("p", victim))
        azurite.service.get_blob_client(container, object_name("p", victim)).delete_blob()  # the copy never happened
        staging = "p/" + staging_key(object_name("p", victim).removeprefix("p/"), victim.size, PART)
        azurite.service.get_blob_client(container, staging).upload_blob(data)

        fp.reset_stats()
        run = await run_export(store_settings(fp, f"az://{container}/p"))
        assert run.exit_code == 0, run.errors
        assert fp.stats.bytes_sent == 0, "the staged bytes were fetched again"
        assert run.totals["files_downloaded"] == 1 and run.totals["files_reused"] == len(expected) - 1
        assert_exported(azurite, container, "p", expected)


@pytest.mark.parametrize("held", [[1], [2], [1, 3]], ids=["first", "middle", "first-and-last"])
async def test_blocks_a_dead_pod_staged_are_committed_and_the_hash_finished_from_the_container(az, make_fake, held) -> None:
    """Blocks staged by an earlier pod (named by the engine's deterministic ids) are not fetched
    again; the SHA-256 it could not keep is finished by reading the committed staging blob."""
    azurite, container = az
    async with make_fake(one_batch_of(92, files=1, mib=13)) as fp:
        (e,) = fp.expected_files()
        assert (await run_export(store_settings(fp, f"az://{container}/p"))).exit_code == 0
        data = azurite.read(container, object_name("p", e))
        azurite.service.get_blob_client(container, object_name("p", e)).delete_blob()
        staging = azurite.service.get_blob_client(container, "p/" + staging_key(object_name("p", e).removeprefix("p/"), e.size, PART))
        for n in held:
            staging.stage_block(block_id(n, (n - 1) * PART), data[(n - 1) * PART:n * PART])
        staging.stage_block("not-ours-" + "0" * 17, b"x" * 10)  # a block id the engine never makes: ignored

        fp.reset_stats()
        put_blocks = azurite.requests("PUT", r"[?&]comp=block&")
        run = await run_export(store_settings(fp, f"az://{container}/p"))
        assert run.exit_code == 0, run.errors
        kept = sum(len(data[(n - 1) * PART:n * PART]) for n in held)
        assert run.totals["bytes_fetched"] == e.size - kept and run.totals["restarts"] == 0, run.totals
        assert azurite.requests("PUT", r"[?&]comp=block&") - put_blocks == 3 - len(held), "a staged block was sent again"
        assert_exported(azurite, container, "p", [e])


async def test_leftovers_of_other_versions_and_of_verified_files_are_cleaned_up(az, make_fake) -> None:
    azurite, container = az
    async with make_fake(one_batch_of(93)) as fp:
        expected = fp.expected_files()
        assert (await run_export(store_settings(fp, f"az://{container}/p"))).exit_code == 0
        done, other = (object_name("p", e).removeprefix("p/") for e in expected)
        for rel in (staging_key(done, expected[0].size, PART),  # a verified file's blocks (a kill after the copy)
                    staging_key(other, expected[1].size + 1, PART),  # a version of the file with another size
                    staging_key(other, expected[1].size, 6 << 20)):  # another part size (the setting changed)
            azurite.service.get_blob_client(container, "p/" + rel).stage_block(block_id(1, 0), b"old")
        azurite.service.get_blob_client(container, "p/" + staging_key(done, 99, PART)).upload_blob(b"old")
        azurite.service.get_blob_client(container, object_name("p", expected[1])).delete_blob()  # to be fetched again

        fp.reset_stats()
        run = await run_export(store_settings(fp, f"az://{container}/p"))
        assert run.exit_code == 0, run.errors
        assert fp.stats.bytes_by_file.get(f"{expected[0].dataset_file_id}/{expected[0].name}", 0) == 0
        assert_exported(azurite, container, "p", expected)


# verify and inventory on a prefix: tests/test_stores.py (both stores, one test)


# ----------------------------------------------------------------------------- URLs and credentials


def test_az_and_abfs_urls_name_the_container_account_and_prefix() -> None:
    url = ExportSettings(out_dir="AZ://scores//aep/daily/").out_dir
    assert isinstance(url, StoreURL) and (url.bucket, url.prefix, url.account, str(url)) == ("scores", "aep/daily", "", "az://scores/aep/daily")
    assert str(url / "report.json") == "az://scores/aep/daily/report.json" and url.is_azure
    adls = ExportSettings(out_dir="abfss://scores@Acct.dfs.core.windows.net/aep").out_dir
    assert (adls.bucket, adls.account, adls.prefix, adls.is_azure) == ("scores", "acct", "aep", True)
    assert not ExportSettings(out_dir="s3://b/p").out_dir.is_azure
    for bad in ("abfs://scores/aep", "abfs://@acct.dfs.core.windows.net/x", "az:///x"):
        with pytest.raises(ValueError):
            ExportSettings(out_dir=bad)


def test_credentials_come_from_settings_then_azure_variables_and_are_masked() -> None:
    url = StoreURL.parse("az://scores/aep")
    env = {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_KEY": "a2V5LWZyb20tZW52"}
    access = resolve_access(url, None, env)
    assert (access.account, access.endpoint, access.key, access.source) == (
        "acct", "https://acct.blob.core.windows.net", "a2V5LWZyb20tZW52", "AZURE_STORAGE_KEY")
    assert mask("key a2V5LWZyb20tZW52") == "key ***"
    sas = resolve_access(url, None, {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_SAS_TOKEN": "?sv=1&sig=c2FzLXNpZw"})
    assert (sas.sas, sas.key, sas.uses_identity) == ("sv=1&sig=c2FzLXNpZw", "", False)
    store = StoreSettings(azure_account_name="mine", azure_account_key="c2V0dGluZy1rZXk=")
    assert resolve_access(url, store, env).source == "store.azure_account_key"  # the setting wins
    assert resolve_access(url, None, {"AZURE_STORAGE_ACCOUNT_NAME": "acct"}).uses_identity  # DefaultAzureCredential
    conn = "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Y29ubi1rZXk=;EndpointSuffix=core.windows.net"
    assert resolve_access(url, None, {"AZURE_STORAGE_CONNECTION_STRING": conn}).endpoint == "https://acct.blob.core.windows.net"
    assert "Y29ubi1rZXk=" not in mask(f"failed with {conn}")
    with pytest.raises(ConfigError, match="names the account other"):
        resolve_access(StoreURL.parse("abfs://scores@other.dfs.core.windows.net/aep"), None, {"AZURE_STORAGE_CONNECTION_STRING": conn})
    with pytest.raises(ConfigError, match="no Azure storage account"):
        resolve_access(url, None, {})
