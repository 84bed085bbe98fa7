"""Entry script for `ray submit` and Ray Jobs: `geodet detect` on the running cluster.

    ray submit cluster/aws-gpu.yaml cluster/submit.py -- SCENE... --model M.onnx --out O.gpkg
    ray job submit --working-dir . -- python cluster/submit.py SCENE... --model ... --out ...

It runs on the head node (or as a job's driver) and joins the cluster it runs on, so
detectors go to every GPU. The arguments go to `geodet detect` exactly as given: an
`--address` in any form (`--address HOST:PORT`, `--address=HOST:PORT`) wins; without
one, the job's RAY_ADDRESS is used, else `auto` (the cluster started on this machine).
"""

import os
import sys

from geodet.cli import main

if __name__ == "__main__":
    if not os.environ.get("RAY_ADDRESS"):
        os.environ["RAY_ADDRESS"] = "auto"
    sys.exit(main(["detect", *sys.argv[1:]]))
