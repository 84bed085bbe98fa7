"""Entry script for `ray submit` and Ray Jobs: `geodet detect` on the running cluster.

    ray submit cluster/aws-gpu.yaml cluster/submit.py -- SCENE... --model M.onnx --out O.gpkg
    ray job submit --working-dir . -- python cluster/submit.py SCENE... --model ... --out ...

It runs on the head node (or as a job's driver) and joins the cluster it runs on
(`--address auto` unless the job gives RAY_ADDRESS), so detectors go to every GPU.
"""

import os
import sys

from geodet.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if "--address" not in args and not os.environ.get("RAY_ADDRESS"):
        args += ["--address", "auto"]
    sys.exit(main(["detect", *args]))
