"""A real S3-compatible server for the tests (and bench/): moto's standalone server on loopback.

`MotoServer` starts `python -m moto.server` on a free 127.0.0.1 port in its own process group and
stops exactly that group. Authentication is on (INITIAL_NO_AUTH_ACTION_COUNT): the first calls
create an IAM user and its access key, and from then on moto checks every request's signature,
so wrong credentials are refused as S3 refuses them. A plain boto3 client (`.client`) reads the
bucket back for assertions, independently of the engine's own S3 code.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from servers import LoopbackServer, spawn, start_on_free_port

REGION = "us-east-1"
_SETUP_ACTIONS = 3  # IAM calls that create the test user's key before authentication starts



class MotoServer(LoopbackServer):
    def __init__(self) -> None:
        self.proc = None
        self.endpoint = ""
        self.access_key = self.secret_key = ""
        self._client: Any = None

    def start(self) -> MotoServer:
        env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(_SETUP_ACTIONS)}
        self.proc, port = start_on_free_port(
            lambda port: spawn([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], env),
            lambda port: f"http://127.0.0.1:{port}/moto-api/", 30, "moto server")
        self.endpoint = f"http://127.0.0.1:{port}"
        self._create_user()
        return self

    def _create_user(self) -> None:
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, aws_access_key_id="setup", aws_secret_access_key="setup",
                           region_name=REGION)
        iam.create_user(UserName="aep-export-tests")
        iam.put_user_policy(UserName="aep-export-tests", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="aep-export-tests")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    # -- reading the bucket back (boto3, not the engine's code) ---------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                                        aws_secret_access_key=self.secret_key, region_name=REGION)
        return self._client

    def env(self, **extra: str) -> dict[str, str]:
        """Credentials and endpoint the standard way, for an engine subprocess."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": REGION,
                "AWS_ENDPOINT_URL": self.endpoint, **extra}

    def create_bucket(self, name: str) -> None:
        self.client.create_bucket(Bucket=name)

    def keys(self, bucket: str, prefix: str = "") -> dict[str, int]:
        """Every object under the prefix: key -> size."""
        found: dict[str, int] = {}
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update({o["Key"]: o["Size"] for o in page.get("Contents", [])})
        return found

    def read(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def size_of(self, bucket: str, key: str) -> int | None:
        try:
            return self.client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except Exception:  # noqa: BLE001 - missing or unreadable: no size
            return None

    def uploads(self, bucket: str, prefix: str = "") -> list[dict[str, Any]]:
        """Multipart uploads in progress, each with its parts."""
        found = []
        listing = self.client.list_multipart_uploads(Bucket=bucket, Prefix=prefix)
        for up in listing.get("Uploads", []):
            try:
                parts = self.client.list_parts(Bucket=bucket, Key=up["Key"], UploadId=up["UploadId"]).get("Parts", [])
            except self.client.exceptions.NoSuchUpload:
                continue  # completed or aborted since the listing
            found.append({"key": up["Key"], "upload_id": up["UploadId"], "parts": parts})
        return found
