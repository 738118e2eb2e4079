#!/usr/bin/env python3
"""Fill and inspect the object stores that hack/platform starts, for tests and benchmarks.

    objectstore.py PROVIDER mkbucket BUCKET                  create it; an existing bucket is fine
    objectstore.py PROVIDER put BUCKET KEY FILE              FILE - reads stdin
    objectstore.py PROVIDER delete BUCKET KEY               a missing object is fine (as on S3)
    objectstore.py PROVIDER rmbucket BUCKET                  delete every object, then the bucket
    objectstore.py PROVIDER list BUCKET [--prefix P]         JSON [{"key": ..., "etag": ...}, ...]
    objectstore.py PROVIDER bulk BUCKET PREFIX COUNT SIZE [--threads N]
                        COUNT objects PREFIX/obj-000001.yaml..., each a distinct ConfigMap manifest
                        of SIZE bytes, uploaded on N threads (32); S3 ~2000/s, GCS ~850/s, Azure ~500/s

PROVIDER is s3 (SeaweedFS), s3b (rclone serve s3), gcs (fake-gcs-server) or azure (Azurite); the
endpoints and keys come from the environment that `source .platform/env` sets (DRIFTLESS_S3_*,
DRIFTLESS_S3B_ENDPOINT, DRIFTLESS_GCS_ENDPOINT, DRIFTLESS_AZURE_*), so a test can point a provider
at a wrong key just by overriding one variable.

Object names are sent as given (no "." or ".." resolution on this side). Which servers keep names
like "../x.yaml", "a//b.yaml" or "/x.yaml": Azurite and the memory-backed fake-gcs-server
(DRIFTLESS_GCS_ENDPOINT=$DRIFTLESS_GCS_VERBATIM_ENDPOINT ... gcs ...); SeaweedFS and rclone refuse
or rewrite them (the list is above start_objectstores in hack/platform).

`list` prints each etag exactly as Flux's source-controller puts it into its revision index, so a
test can compute the revision Flux would report: S3 the ETag without its quotes (minio-go trims
them), GCS the JSON API `etag` attribute as returned, Azure the listing's ETag string hex-encoded
(source-controller does fmt.Sprintf("%x", etag)).

Runs with the python of the venv hack/platform installs (boto3, azure-storage-blob); the wrapper
hack/objectstore ($DRIFTLESS_OBJECTSTORE_TOOL) does that.
"""

import argparse
import concurrent.futures
import hashlib
import hmac
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse


class Failure(Exception):
    """An error worth one line on stderr, not a traceback."""


def env(name):
    value = os.environ.get(name)
    if not value:
        raise Failure(f"{name} is not set (source the platform's env file)")
    return value


class KeepAlive:
    """Plain-HTTP requests on one keep-alive connection per thread (urllib.request opens a new
    connection for every request, which halves the bulk rate); a dropped connection is retried once."""

    def __init__(self, url):
        url = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
        self.host, self.port = url.hostname, url.port or 80
        self.local = threading.local()

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers or {})
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise


# ----------------------------------------------------------------------------------------- S3

class S3:
    def __init__(self, endpoint_var, threads):
        import boto3
        from botocore.config import Config

        endpoint = env(endpoint_var)
        if "://" not in endpoint:
            endpoint = "http://" + endpoint
        config = Config(
            signature_version="s3v4",
            # Path style: the servers listen on 127.0.0.1, there is no DNS for bucket subdomains.
            s3={"addressing_style": "path"},
            # boto3 >= 1.36 adds CRC32 checksums to every upload by default; neither server needs
            # them and they cost CPU in the bulk loop.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            max_pool_connections=max(threads, 10),
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
        )
        self.access_key, self.secret_key = env("DRIFTLESS_S3_ACCESS_KEY"), env("DRIFTLESS_S3_SECRET_KEY")
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=config,
        )
        self.host = urllib.parse.urlsplit(endpoint).netloc
        self.http = KeepAlive(endpoint)

    def _call(self, fn, ignore=(), **kwargs):
        """fn(**kwargs); an S3 error whose code is in ignore gives None, any other a Failure."""
        from botocore.exceptions import ClientError

        try:
            return fn(**kwargs)
        except ClientError as e:
            err = e.response.get("Error", {})
            if err.get("Code") in ignore:
                return None
            raise Failure(f"{err.get('Code', '?')}: {err.get('Message', e)}") from None

    def mkbucket(self, bucket):
        self._call(self.client.create_bucket, ignore=("BucketAlreadyOwnedByYou", "BucketAlreadyExists"), Bucket=bucket)

    def put(self, bucket, key, data):
        self._call(self.client.put_object, Bucket=bucket, Key=key, Body=data)

    def bulk_put(self, bucket, key, data):
        """put without botocore, whose ~1.3 ms of CPU per request capped bulk at ~550 objects/s on
        2 cores; a bare SigV4-signed PUT on a kept-alive connection does ~2000/s."""
        now = time.gmtime()
        amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
        path = "/" + urllib.parse.quote(bucket, safe="") + "/" + urllib.parse.quote(key, safe="/~")
        digest = hashlib.sha256(data).hexdigest()
        headers = {"host": self.host, "x-amz-content-sha256": digest, "x-amz-date": amz_date}
        names = ";".join(sorted(headers))
        canonical = "\n".join(["PUT", path, "", "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)), names, digest])
        scope = f"{day}/us-east-1/s3/aws4_request"
        to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        k = ("AWS4" + self.secret_key).encode()
        for part in (day, "us-east-1", "s3", "aws4_request"):
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        signature = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                                    f"SignedHeaders={names}, Signature={signature}")
        for attempt in range(4):
            status, body = self.http.request("PUT", path, data, headers)
            if status == 200:
                return
            if status != 503 or attempt == 3:  # 503 SlowDown: back off and retry
                code = re.search(rb"<Code>([^<]*)</Code>", body)
                raise Failure(f"HTTP {status} {code.group(1).decode() if code else ''} for PUT {path}")
            time.sleep(0.2 * 2 ** attempt)

    def delete(self, bucket, key):
        self._call(self.client.delete_object, Bucket=bucket, Key=key)

    def list(self, bucket, prefix):
        out = []
        kwargs = {"Bucket": bucket, "Prefix": prefix}
        while True:
            page = self._call(self.client.list_objects_v2, **kwargs)
            for obj in page.get("Contents", []):
                out.append({"key": obj["Key"], "etag": obj.get("ETag", "").strip('"')})
            if not page.get("IsTruncated"):
                return out
            kwargs["ContinuationToken"] = page["NextContinuationToken"]

    def rmbucket(self, bucket):
        try:
            keys = [o["key"] for o in self.list(bucket, "")]
        except Failure as e:
            if str(e).startswith("NoSuchBucket"):
                return
            raise
        # DeleteObjects, 1000 keys a request: one DeleteObject each costs ~15 s for 10,000 keys.
        for i in range(0, len(keys), 1000):
            done = self._call(self.client.delete_objects, Bucket=bucket,
                              Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True})
            for err in done.get("Errors", []):
                raise Failure(f"{err.get('Code')}: {err.get('Message')} (deleting {err.get('Key')!r})")
        self._call(self.client.delete_bucket, ignore=("NoSuchBucket",), Bucket=bucket)


# ---------------------------------------------------------------------------------------- GCS

class GCS:
    """The GCS JSON API over plain HTTP; fake-gcs-server does not check credentials."""

    def __init__(self, threads):
        self.http = KeepAlive(env("DRIFTLESS_GCS_ENDPOINT"))

    def _request(self, method, path, body=None, ok=(200, 204), ctype="application/json"):
        status, data = self.http.request(method, path, body, {"Content-Type": ctype} if body is not None else {})
        if status not in ok:
            raise Failure(f"HTTP {status} for {method} {path}: {data[:300].decode(errors='replace').strip()}")
        return status, json.loads(data) if data else {}

    @staticmethod
    def _q(s):
        return urllib.parse.quote(s, safe="")

    def mkbucket(self, bucket):
        self._request("POST", "/storage/v1/b?project=driftless", json.dumps({"name": bucket}).encode(), ok=(200, 409))

    def put(self, bucket, key, data):
        self._request("POST", f"/upload/storage/v1/b/{self._q(bucket)}/o?uploadType=media&name={self._q(key)}",
                      data, ctype="application/octet-stream")

    def delete(self, bucket, key):
        self._request("DELETE", f"/storage/v1/b/{self._q(bucket)}/o/{self._q(key)}", ok=(200, 204, 404))

    def list(self, bucket, prefix):
        out, token = [], None
        while True:
            query = {"prefix": prefix, "maxResults": "1000"}
            if token:
                query["pageToken"] = token
            _, page = self._request("GET", f"/storage/v1/b/{self._q(bucket)}/o?{urllib.parse.urlencode(query)}")
            out += [{"key": o["name"], "etag": o.get("etag", "")} for o in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return out

    def rmbucket(self, bucket):
        try:
            keys = [o["key"] for o in self.list(bucket, "")]
        except Failure as e:
            if "HTTP 404" in str(e):
                return
            raise
        run_parallel(lambda k: self.delete(bucket, k), keys, 16)
        self._request("DELETE", f"/storage/v1/b/{self._q(bucket)}", ok=(200, 204, 404))


# -------------------------------------------------------------------------------------- Azure

class Azure:
    def __init__(self, threads):
        import urllib3.util.url
        from azure.storage.blob import BlobServiceClient, LinearRetry

        # requests (under azure-core) passes every URL through urllib3's parse_url, which resolves
        # "." and ".." segments: "a/../d.yaml" went out as "d.yaml" but was signed as written
        # (AuthorizationFailure), "../evil.yaml" left the container. Send keys as given, as the
        # S3 and GCS code here does, so tests can store hostile keys.
        if hasattr(urllib3.util.url, "_remove_path_dot_segments"):
            urllib3.util.url._remove_path_dot_segments = lambda path: path

        self.service = BlobServiceClient(
            account_url=env("DRIFTLESS_AZURE_ENDPOINT"),
            credential={"account_name": env("DRIFTLESS_AZURE_ACCOUNT"), "account_key": env("DRIFTLESS_AZURE_KEY")},
            # A server that is not there must fail fast: the storage SDK's own ExponentialRetry
            # waits 15 s, then 45 s, ... (~40 s for a refused connection, as measured).
            retry_policy=LinearRetry(backoff=0.2, random_jitter_range=0.1, retry_total=2),
            connection_timeout=5,
        )

    def _call(self, fn, *args, ignore=(), **kwargs):
        from azure.core.exceptions import HttpResponseError

        try:
            return fn(*args, **kwargs)
        except ignore:
            return None
        except HttpResponseError as e:
            code = getattr(e.error_code, "value", e.error_code) or e.status_code
            raise Failure(f"{code}: {str(e.reason or e).splitlines()[0]}") from None

    def mkbucket(self, bucket):
        from azure.core.exceptions import ResourceExistsError

        self._call(self.service.create_container, bucket, ignore=ResourceExistsError)

    def put(self, bucket, key, data):
        self._call(self.service.get_blob_client(bucket, key).upload_blob, data, overwrite=True)

    def delete(self, bucket, key):
        from azure.core.exceptions import ResourceNotFoundError

        self._call(self.service.get_blob_client(bucket, key).delete_blob, ignore=ResourceNotFoundError)

    def list(self, bucket, prefix):
        container = self.service.get_container_client(bucket)
        # The listing's <Etag> carries no quotes on Azure; strip them should a server add some.
        # Flux hex-encodes the string's bytes: fmt.Sprintf("%x", etag).
        return self._call(lambda: [
            {"key": b.name, "etag": b.etag.strip('"').encode().hex()}
            for b in container.list_blobs(name_starts_with=prefix or None)
        ])

    def rmbucket(self, bucket):
        from azure.core.exceptions import ResourceNotFoundError

        # Deleting a container deletes its blobs too: one request.
        self._call(self.service.delete_container, bucket, ignore=ResourceNotFoundError)


# --------------------------------------------------------------------------------------- bulk

def run_parallel(fn, items, threads):
    """Run fn over items on a thread pool; the first error stops the run."""
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(fn, items):
            pass


def manifest(name, size):
    """A ConfigMap manifest of exactly size bytes (so the objects apply and their ETags differ);
    below the smallest manifest, a comment of that size."""
    head = f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  pad: \""
    tail = "\"\n"
    if size >= len(head) + len(tail):
        return (head + "x" * (size - len(head) - len(tail)) + tail).encode()
    line = f"# {name}\n"
    return (line + "#" * size)[:size].encode() if size > len(line) else line.encode()[:size]


def bulk(store, bucket, prefix, count, size, threads):
    put = getattr(store, "bulk_put", store.put)
    prefix = prefix.strip("/")
    stem = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-")

    def one(i):
        key = f"obj-{i:06d}.yaml"
        name = f"{stem}-obj-{i:06d}" if stem else f"obj-{i:06d}"
        put(bucket, f"{prefix}/{key}" if prefix else key, manifest(name[-63:].lstrip("-"), size))

    start = time.monotonic()
    run_parallel(one, range(1, count + 1), threads)
    took = time.monotonic() - start
    print(f"uploaded {count} objects of {size} bytes in {took:.1f}s ({count / took:.0f}/s)", file=sys.stderr)


# ---------------------------------------------------------------------------------------- CLI

def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("provider", choices=["s3", "s3b", "gcs", "azure"])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("mkbucket").add_argument("bucket")
    c = sub.add_parser("put")
    c.add_argument("bucket"); c.add_argument("key"); c.add_argument("file")
    c = sub.add_parser("delete")
    c.add_argument("bucket"); c.add_argument("key")
    sub.add_parser("rmbucket").add_argument("bucket")
    c = sub.add_parser("list")
    c.add_argument("bucket"); c.add_argument("--prefix", default="")
    c = sub.add_parser("bulk")
    c.add_argument("bucket"); c.add_argument("prefix")
    c.add_argument("count", type=int); c.add_argument("size", type=int)
    c.add_argument("--threads", type=int, default=int(os.environ.get("DRIFTLESS_OBJECTSTORE_THREADS", "32")))
    a = p.parse_args()

    threads = getattr(a, "threads", 16)
    if a.provider == "s3":
        store = S3("DRIFTLESS_S3_ENDPOINT", threads)
    elif a.provider == "s3b":
        store = S3("DRIFTLESS_S3B_ENDPOINT", threads)
    elif a.provider == "gcs":
        store = GCS(threads)
    else:
        store = Azure(threads)

    if a.command == "mkbucket":
        store.mkbucket(a.bucket)
    elif a.command == "put":
        if a.file == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(a.file, "rb") as f:
                data = f.read()
        store.put(a.bucket, a.key, data)
    elif a.command == "delete":
        store.delete(a.bucket, a.key)
    elif a.command == "rmbucket":
        store.rmbucket(a.bucket)
    elif a.command == "list":
        json.dump(store.list(a.bucket, a.prefix), sys.stdout)
        print()
    elif a.command == "bulk":
        bulk(store, a.bucket, a.prefix, a.count, a.size, a.threads)


if __name__ == "__main__":
    try:
        main()
    except Failure as e:
        print(f"objectstore: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:
        # A server that is not there (connection refused, timeout): one line, not a traceback.
        if isinstance(e, OSError) or type(e).__module__.split(".")[0] in ("botocore", "azure", "urllib3"):
            print(f"objectstore: {type(e).__name__}: {e}", file=sys.stderr)
            sys.exit(1)
        raise
    except KeyboardInterrupt:
        sys.exit(130)
