"""The loopback servers other tests rely on really behave as real ones do."""

from __future__ import annotations

import urllib.request

import boto3


def test_http_server_honours_ranges_and_counts_bytes(http_server):
    (http_server.root / "f.bin").write_bytes(bytes(range(256)) * 4)
    req = urllib.request.Request(f"{http_server.url}/f.bin", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(req) as r:
        assert r.status == 206 and r.read() == bytes(range(10, 20))
        assert r.headers["Content-Range"] == "bytes 10-19/1024"
    with urllib.request.urlopen(f"{http_server.url}/f.bin") as r:
        assert r.status == 200 and len(r.read()) == 1024
    assert http_server.bytes_sent("f.bin") == 1034


def test_s3_server_stores_objects(s3_server):
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint)
    s3.create_bucket(Bucket="geodet-test")
    s3.put_object(Bucket="geodet-test", Key="k.txt", Body=b"hello")
    assert s3.get_object(Bucket="geodet-test", Key="k.txt")["Body"].read() == b"hello"
