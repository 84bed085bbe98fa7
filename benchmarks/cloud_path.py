"""What object storage costs a run: local files vs an S3-compatible server on loopback.

    python benchmarks/cloud_path.py --size 4096

Generates an aerial scene once, starts moto's S3 server on 127.0.0.8 (stopped at the
end), and runs `geodet.detect` with the bundled detector three ways on one local Ray
instance: everything local; model and output in the bucket (model read once by the
driver and shipped through Ray's object store, output uploaded when complete,
progress record uploaded beside it); and the scene read from the bucket too
(/vsis3/). Prints one row per way. Loopback has no network latency: the figures
show geodet's own overhead, not a cloud's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

import geodet
from geodet import engine
from geodet.demo import bundled_model
from geodet.synthetic import vehicle_scene

HOST, BUCKET = "127.0.0.8", "geodet-bench"


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", HOST,
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return proc, f"{HOST}:{port}"
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("moto_server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geodet-cloud-"))
    scene = work / "scene.tif"
    vehicle_scene(scene, size=args.size, seed=5)
    moto, endpoint = start_moto()
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=f"http://{endpoint}",
                      AWS_S3_ENDPOINT=endpoint, AWS_HTTPS="NO", AWS_VIRTUAL_HOSTING="FALSE")
    try:
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.upload_file(str(scene), BUCKET, "scene.tif")
        s3.upload_file(bundled_model(), BUCKET, "vehicles.onnx")
        model_url = f"s3://{BUCKET}/vehicles.onnx"
        ways = [
            ("all local", str(scene), bundled_model(), str(work / "out.gpkg")),
            ("model + output in S3", str(scene), model_url, f"s3://{BUCKET}/out1.gpkg"),
            ("scene + model + output in S3", f"/vsis3/{BUCKET}/scene.tif", model_url,
             f"s3://{BUCKET}/out2.gpkg"),
        ]
        with engine.ray_cluster(None):  # one Ray instance for every way
            geodet.detect(str(scene), bundled_model(), progress=False)  # warm-up
            rows = []
            for name, scene_at, model_at, out in ways:
                t = time.perf_counter()
                found = geodet.detect(scene_at, model_at, out, progress=False)
                rows.append((name, time.perf_counter() - t, len(found)))
    finally:
        moto.terminate()
        moto.wait(timeout=30)
    print(f"\n{args.size} x {args.size} px, bundled detector, "
          f"{found.attrs['geodet']['tiles_total']} tiles\n")
    print("| way | seconds | detections |\n| --- | ---: | ---: |")
    for name, seconds, n in rows:
        print(f"| {name} | {seconds:.1f} | {n} |")


if __name__ == "__main__":
    main()
