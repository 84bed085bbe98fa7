"""Offline checks of cluster/: the launcher files against Ray's own schema, the RayJobs
against KubeRay's CRD schema, every name the Kubernetes manifests refer to defined in
them, token authentication and reachable dashboards, IAM, the image and the extras, and
the nightly RayJob's command as geodet will read it."""

from __future__ import annotations

import ast
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
LAUNCHERS = ["aws-gpu.yaml", "gcp-gpu.yaml", "onprem-gpu.yaml"]
CLOUDS = ["aws-gpu.yaml", "gcp-gpu.yaml"]
#: KubeRay v1.7.0 (commit 59d663a), config/crd/bases/ray.io_rayjobs.yaml: the v1
#: openAPIV3Schema, descriptions left out.
RAYJOB_SCHEMA = ROOT / "tests" / "fixtures" / "kuberay-v1.7.0-rayjob.schema.json"
#: The one-off RayJob (created by hand) and the nightly CronJob's template.
ONE_OFF, NIGHTLY = "rayjob.yaml", "nightly-rayjob.yaml"
LOOPBACK = ("127.", "localhost", "::1")


def launcher(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def manifests() -> list[dict]:
    """Everything `kubectl apply -k cluster/kuberay/` and the one-off RayJob create."""
    docs = [d for f in sorted(KUBERAY.glob("*.yaml")) if f.name != "kustomization.yaml"
            for d in yaml.safe_load_all(f.read_text())]
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    docs += [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]},
              "data": {Path(f).name: (KUBERAY / f).read_text() for f in g["files"]}}
             for g in kustomization["configMapGenerator"]]
    return docs


def one(kind: str) -> dict:
    [doc] = [d for d in manifests() if d["kind"] == kind]
    return doc


def rayjob(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def strict(schema):
    """Reject unknown fields, as the API server does for a structural CRD schema."""
    if isinstance(schema, dict):
        if (schema.get("type") == "object" and "properties" in schema
                and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


# --- Ray cluster launcher ---------------------------------------------------------------

@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_file_matches_rays_schema(name):
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json")
                        .read_text())
    jsonschema.validate(launcher(name), schema)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_turns_token_auth_on_and_keeps_the_dashboard_reachable(name):
    config = launcher(name)
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    options = config.get("docker", {}).get("run_options", [])
    assert ("--env RAY_AUTH_MODE=token" in options
            or any("export RAY_AUTH_MODE=token" in c for c in config["setup_commands"]))
    host = re.search(r"--dashboard-host[= ](\S+)", " ".join(config["head_start_ray_commands"]))
    assert host and not host.group(1).startswith(LOOPBACK)


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_sync_neither_shadows_geodet_nor_skips_results(name):
    """`ray submit` runs from ~, where a directory named geodet shadows the package; an
    rsync_exclude pattern matching *.gpkg makes `ray rsync-down` fetch nothing."""
    config = launcher(name)
    assert all(Path(remote).name != "geodet" for remote in config["file_mounts"])
    for pattern in config.get("rsync_exclude", []):
        assert not fnmatch.fnmatch("vehicles.gpkg", pattern), pattern


@pytest.mark.parametrize("name", CLOUDS)
def test_cloud_nodes_run_the_geodet_image_with_detectors_on_gpus_only(name):
    config = launcher(name)
    assert config["docker"]["image"].rsplit("/", 1)[-1].startswith("geodet:")
    assert not {"head_image", "worker_image"} & set(config["docker"])
    types = config["available_node_types"]
    head = types.pop(config["head_node_type"])
    assert head["resources"] == {"CPU": 0, "GPU": 0}
    assert types and all(t["resources"]["GPU"] >= 1 and t["max_workers"] >= 1
                         for t in types.values())


def allows(policy: dict, action: str, resource: str = "*") -> bool:
    for statement in policy["Statement"]:
        actions, resources = statement["Action"], statement["Resource"]
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if (statement["Effect"] == "Allow" and any(fnmatch.fnmatch(action, a) for a in actions)
                and any(fnmatch.fnmatch(resource, r) for r in resources)):
            return True
    return False


def test_aws_profiles_let_the_head_start_workers_and_every_node_pull_and_read():
    config = launcher("aws-gpu.yaml")
    profiles = {n: t["node_config"]["IamInstanceProfile"]["Arn"].rsplit("/", 1)[1]
                for n, t in config["available_node_types"].items()}
    head_profile = profiles.pop(config["head_node_type"])
    [worker_profile] = set(profiles.values())
    assert worker_profile != head_profile  # workers cannot launch instances
    head, worker = (json.loads((CLUSTER / f"aws-iam-{n}.json").read_text())
                    for n in ("head", "worker"))
    # A head with its own profile gets nothing from Ray: it must launch, tag, stop
    # workers and pass them their role (profile and role share their name).
    for action in ("ec2:RunInstances", "ec2:CreateTags", "ec2:TerminateInstances",
                   "ec2:DescribeInstances"):
        assert allows(head, action)
    account = config["docker"]["image"].split(".")[0]
    assert allows(head, "iam:PassRole", f"arn:aws:iam::{account}:role/{worker_profile}")
    assert not allows(worker, "ec2:RunInstances")
    region, repo = re.match(r"\d+\.dkr\.ecr\.([\w-]+)\.amazonaws\.com/([\w-]+):",
                            config["docker"]["image"]).groups()
    assert region == config["provider"]["region"]
    for policy in (head, worker):
        assert allows(policy, "ecr:GetAuthorizationToken")
        assert allows(policy, "ecr:BatchGetImage",
                      f"arn:aws:ecr:{region}:{account}:repository/{repo}")
        assert allows(policy, "s3:GetObject", "arn:aws:s3:::my-bucket/scenes/north.tif")
    assert allows(head, "s3:PutObject", "arn:aws:s3:::my-bucket/geodet/vehicles.gpkg")


def test_aws_node_configs_are_valid_run_instances_requests():
    """Ray passes a node_config to EC2's RunInstances as it is: check it against the
    request model botocore ships."""
    from botocore.session import get_session
    from botocore.validate import ParamValidator

    request = get_session().get_service_model("ec2").operation_model("RunInstances")
    for name, node in launcher("aws-gpu.yaml")["available_node_types"].items():
        report = ParamValidator().validate({**node["node_config"], "MinCount": 1,
                                            "MaxCount": 1}, request.input_shape)
        assert not report.has_errors(), f"{name}: {report.generate_report()}"


def conforms(value, schema: dict, schemas: dict, path: str) -> None:
    """``value`` uses only fields, objects and arrays of the discovery ``schema``."""
    schema = schemas[schema["$ref"]] if "$ref" in schema else schema
    if isinstance(value, dict):
        assert schema.get("type") == "object", f"{path} is not an object"
        for key, item in value.items():
            assert key in schema.get("properties", {}), f"{path}.{key} is no field"
            conforms(item, schema["properties"][key], schemas, f"{path}.{key}")
    elif isinstance(value, list):
        assert schema.get("type") == "array", f"{path} is not an array"
        for i, item in enumerate(value):
            conforms(item, schema["items"], schemas, f"{path}[{i}]")


def test_gcp_node_configs_are_valid_compute_instances():
    """Ray passes a node_config to Compute's instances.insert as the body: check it
    against the Instance schema of the discovery document the Google API client ships."""
    import googleapiclient

    documents = Path(googleapiclient.__file__).parent / "discovery_cache" / "documents"
    schemas = json.loads((documents / "compute.v1.json").read_text())["schemas"]
    for name, node in launcher("gcp-gpu.yaml")["available_node_types"].items():
        conforms(node["node_config"], {"$ref": "Instance"}, schemas, name)


def test_gcp_nodes_have_their_own_service_accounts():
    config = launcher("gcp-gpu.yaml")
    accounts = {n: t["node_config"]["serviceAccounts"][0]["email"]
                for n, t in config["available_node_types"].items()}
    head = accounts.pop(config["head_node_type"])
    assert accounts and head not in accounts.values()
    assert all(a.endswith(f"@{config['provider']['project_id']}.iam.gserviceaccount.com")
               for a in [head, *accounts.values()])


# --- the image and the extras -------------------------------------------------------------

def dockerfile() -> str:
    return (CLUSTER / "Dockerfile").read_text()


def extras() -> dict[str, list[str]]:
    """pyproject.toml's requirements by extra; "" for the runtime ones."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {"": project["dependencies"], **project["optional-dependencies"]}


def test_image_pairs_a_python_geodet_supports_with_the_cuda_of_its_extra():
    ray_image = re.search(r"^ARG RAY_IMAGE=rayproject/ray:([\d.]+)-py3(\d+)-cu(\d+)$",
                          dockerfile(), re.M)
    assert ray_image, "the base image must be a rayproject/ray CUDA tag"
    ray_version, python_minor, cuda = ray_image.groups()
    assert int(python_minor) >= 11
    assert re.search(r"^ARG GPU_EXTRA=gpu$", dockerfile(), re.M)
    assert cuda.startswith("13") and extras()["gpu"] == ["onnxruntime-gpu>=1.27"]
    assert extras()["gpu-cuda12"] == ["onnxruntime-gpu>=1.19,<1.27"]
    for name in (ONE_OFF, NIGHTLY):
        assert rayjob(name)["spec"]["rayClusterSpec"]["rayVersion"] == ray_version
    run = re.search(r"^RUN (.+?)(?<!\\)$", dockerfile(), re.M | re.S).group(1)
    assert "${GPU_EXTRA}" in run and "cluster/check_cuda_provider.py" in run
    assert Path(re.search(r"^WORKDIR (\S+)", dockerfile(), re.M).group(1)).name != "geodet"


def test_image_has_the_tensorrt_its_onnxruntime_links():
    """--trt: TensorRT 10 (the soname the provider of onnxruntime-gpu links) for the
    image's CUDA, registered with the loader, and checked at build time."""
    cuda = re.search(r"^ARG RAY_IMAGE=\S+-cu(\d\d)", dockerfile(), re.M).group(1)
    assert re.search(rf'^ARG TRT_LIBS="tensorrt-cu{cuda}-libs>=10\.\d+,<11"$', dockerfile(),
                     re.M)
    run = re.search(r"^RUN (.+?)(?<!\\)$", dockerfile(), re.M | re.S).group(1)
    assert "ldconfig" in run and "tensorrt_libs" in run
    assert run.rstrip().endswith("check_cuda_provider.py ${TRT_LIBS:+--trt}")


def test_cuda_check_fails_without_the_cuda_provider():
    """Here only the CPU build is installed: the image's build check must refuse it."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this machine has the CUDA build of onnxruntime")
    done = subprocess.run([sys.executable, str(CLUSTER / "check_cuda_provider.py")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "no CUDAExecutionProvider" in done.stderr


def geodet_imports() -> set[str]:
    names = set()
    for module in (ROOT / "geodet").rglob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module)
    return names


def test_runtime_dependencies_are_what_geodet_imports():
    imports = geodet_imports()
    assert not any(n == "ray.data" or n.startswith("ray.data.") for n in imports)
    declared = {re.split(r"[\[<>=!~;]", r)[0].lower() for r in extras()[""]}
    assert "ray" in declared and not any("ray[" in r for r in extras()[""])
    providers = importlib.metadata.packages_distributions()
    third_party = {n.split(".")[0] for n in imports} - set(sys.stdlib_module_names)
    third_party -= {"geodet", "onnxruntime"}  # onnxruntime: the cpu / gpu extras
    for name in third_party:
        assert {d.lower() for d in providers[name]} & declared, name
    assert any(r.startswith("ray[default]") for r in extras()["cluster"])


# --- KubeRay --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [ONE_OFF, NIGHTLY])
def test_rayjob_matches_kuberays_crd_schema(name):
    jsonschema.validate(rayjob(name), strict(json.loads(RAYJOB_SCHEMA.read_text())))


def geodet_argv(entrypoint: str) -> list[str]:
    """The arguments geodet gets from a RayJob's entrypoint: KubeRay's submitter runs
    `bash -c "... ray job submit ... -- ENTRYPOINT"`, `ray job submit` joins its
    arguments with `subprocess.list2cmdline`, and Ray's job supervisor runs that with
    `/bin/sh -c` (no file on the head matches an s3:// pattern, so what is left
    unquoted reaches geodet as it is)."""
    return shlex.split(subprocess.list2cmdline(shlex.split(entrypoint)))


@pytest.mark.parametrize("name", [ONE_OFF, NIGHTLY])
def test_rayjob_is_reachable_by_kuberay_token_protected_and_writes_to_storage(name):
    spec = rayjob(name)["spec"]
    cluster = spec["rayClusterSpec"]
    host = cluster["headGroupSpec"]["rayStartParams"].get("dashboard-host", "0.0.0.0")
    assert not host.startswith(LOOPBACK)
    assert cluster["authOptions"]["mode"] == "token"
    argv = geodet_argv(spec["entrypoint"])
    assert argv[:2] == ["geodet", "detect"]
    assert argv[argv.index("--out") + 1].startswith("s3://")
    templates = [cluster["headGroupSpec"]["template"],
                 *(g["template"] for g in cluster["workerGroupSpecs"])]
    assert len({c["image"] for t in templates for c in t["spec"]["containers"]}) == 1
    assert all(t["spec"]["serviceAccountName"] == "geodet-runner" for t in templates)


def test_one_off_rayjob_is_resumable():
    assert "--resume" in geodet_argv(rayjob(ONE_OFF)["spec"]["entrypoint"])


def test_both_rayjobs_run_on_the_same_image():
    images = {c["image"] for name in (ONE_OFF, NIGHTLY)
              for c in rayjob(name)["spec"]["rayClusterSpec"]["headGroupSpec"]
              ["template"]["spec"]["containers"]}
    assert len(images) == 1


def image_paths() -> dict[str, str]:
    """Where the Dockerfile's COPY lines put repository paths: image path -> repo path."""
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile(), re.M).group(1)
    copied = {}
    for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M):
        *sources, dest = [w for w in line.split() if not w.startswith("--")]
        target = os.path.normpath(os.path.join(workdir, dest))
        for source in sources:
            into = dest.endswith("/") or len(sources) > 1
            copied[os.path.join(target, Path(source).name) if into else target] = source
    return copied


def in_repo(image_path: str) -> Path | None:
    """The repository file that the image holds at ``image_path``, if it copies one."""
    for target, source in image_paths().items():
        if image_path == target or image_path.startswith(target + "/"):
            return ROOT / source / os.path.relpath(image_path, target)
    return None


@pytest.mark.parametrize("name", [ONE_OFF, NIGHTLY])
def test_every_image_path_an_entrypoint_names_is_copied_from_the_repo(name):
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile(), re.M).group(1)
    named = [a for a in geodet_argv(rayjob(name)["spec"]["entrypoint"])
             if a.startswith(workdir + "/")]
    assert named or name == ONE_OFF
    for path in named:
        source = in_repo(path)
        assert source is not None, f"{path}: no COPY puts it in the image"
        assert source.exists(), f"{path}: {source} is not in the repository"


def test_nightly_runs_a_config_file_incrementally_on_object_storage():
    """The nightly entrypoint, read by geodet's own parser and job file loader: the
    job file of configs/ (as the image holds it), --incremental, JSON logs, and the
    command line's scenes, model and output on S3 over the file's pod-local paths."""
    from geodet import jobfile
    from geodet.cli import build_parser
    from geodet.options import Options

    argv = geodet_argv(rayjob(NIGHTLY)["spec"]["entrypoint"])
    args = build_parser().parse_args(argv[1:])
    assert args.command == "detect" and args.incremental and args.log_format == "json"
    assert not getattr(args, "resume", False) and not getattr(args, "overwrite", False)
    config = in_repo(args.config)
    assert config is not None and config.parent == ROOT / "configs", args.config
    flags = {k: v for k, v in vars(args).items() if k in Options.model_fields}
    request = jobfile.combine(jobfile.load(config), args.scenes, args.model, args.out, flags)
    assert request.options["incremental"] is True
    assert request.scenes == ("s3://my-bucket/flights/**/*.tif",)
    assert request.model.startswith("s3://") and request.model.endswith(".onnx")
    assert request.out.startswith("s3://") and request.out.endswith(".gpkg")
    one_off = geodet_argv(rayjob(ONE_OFF)["spec"]["entrypoint"])
    assert request.out != one_off[one_off.index("--out") + 1]
    # The pods' role (runner.yaml: the S3 statements of aws-iam-head.json) reads the
    # scenes and the model and writes the output and its progress record.
    policy = json.loads((CLUSTER / "aws-iam-head.json").read_text())
    arn = "arn:aws:s3:::" + request.out.removeprefix("s3://")
    assert allows(policy, "s3:PutObject", arn) and allows(policy, "s3:PutObject",
                                                           arn + ".progress")
    assert allows(policy, "s3:DeleteObject", arn + ".progress")
    assert allows(policy, "s3:GetObject", "arn:aws:s3:::" + request.model.removeprefix("s3://"))
    assert allows(policy, "s3:ListBucket", "arn:aws:s3:::my-bucket")


def references(doc) -> set[tuple[str, str]]:
    """(kind, name) of every service account, config map, secret and claim ``doc`` uses."""
    found = set()
    if isinstance(doc, dict):
        for key, value in doc.items():
            if key == "serviceAccountName":
                found.add(("ServiceAccount", value))
            elif key in ("configMap", "configMapKeyRef", "configMapRef"):
                found.add(("ConfigMap", value["name"]))
            elif key == "secret":
                found.add(("Secret", value["secretName"]))
            elif key in ("secretKeyRef", "secretRef"):
                found.add(("Secret", value["name"]))
            elif key == "persistentVolumeClaim":
                found.add(("PersistentVolumeClaim", value["claimName"]))
            elif key in ("subjects", "roleRef"):
                found |= {(s["kind"], s["name"]) for s in (value if key == "subjects"
                                                           else [value])}
            found |= references(value)
    elif isinstance(doc, list):
        for item in doc:
            found |= references(item)
    return found


def test_every_name_the_manifests_use_is_defined_in_them():
    docs = manifests()
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs}
    used = set().union(*(references(d) for d in docs))
    assert used and used <= defined, used - defined
    kustomization = yaml.safe_load((KUBERAY / "kustomization.yaml").read_text())
    generated = {f for g in kustomization["configMapGenerator"] for f in g["files"]}
    assert generated == {NIGHTLY}  # what the CronJob's pod reads
    listed = set(kustomization["resources"]) | generated
    # Everything but the one-off RayJob, which is created by hand.
    assert listed == {f.name for f in KUBERAY.glob("*.yaml")} - {"kustomization.yaml",
                                                                  ONE_OFF}


def test_nightly_runs_a_pinned_kubectl_with_just_the_rights_it_needs():
    pod = one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", container["image"])
    [rule] = one("Role")["rules"]
    assert rule["resources"] == ["rayjobs"] and set(rule["verbs"]) == {"get", "list",
                                                                       "create"}
    assert one("CronJob")["spec"]["concurrencyPolicy"] == "Forbid"


def run_nightly(tmp_path: Path, rayjobs: str) -> tuple[subprocess.CompletedProcess, Path]:
    """The CronJob's script as written, in its working directory (the ConfigMap's
    files), with `kubectl` answering `get` with ``rayjobs`` (what kubectl's jsonpath
    prints for the RayJobs there) and recording what `create` receives: no Kubernetes
    API server runs here."""
    pod = one("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    work = tmp_path / "manifests"
    work.mkdir()
    for name, text in one("ConfigMap")["data"].items():
        (work / name).write_text(text)
    created, get = tmp_path / "created.yaml", tmp_path / "get.args"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(f'#!/bin/sh\ncase "$1" in\n  get) echo "$@" > {get}; printf "{rayjobs}" ;;'
                       f'\n  create) cat > {created} ;;\n  *) exit 2 ;;\nesac\n')
    kubectl.chmod(0o755)
    done = subprocess.run([*container["command"], *container["args"]], cwd=work,
                          env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=60)
    (key, value), = rayjob(NIGHTLY)["metadata"]["labels"].items()
    assert rayjob(ONE_OFF)["metadata"]["labels"] == {key: value}  # one-off runs count too
    assert f"-l {key}={value}" in get.read_text()  # it looks at geodet's RayJobs
    return done, created


@pytest.mark.parametrize("rayjobs", ["geodet-detect-20260101 Running\\n",
                                     "geodet-detect-20260102 \\n",
                                     "geodet-detect Complete\\ngeodet-detect-1 Retrying\\n"])
def test_nightly_refuses_while_a_rayjob_runs(tmp_path, rayjobs):
    done, created = run_nightly(tmp_path, rayjobs)
    assert done.returncode != 0 and "still running" in done.stderr
    assert not created.exists()


def test_nightly_creates_the_nights_rayjob_once_earlier_ones_ended(tmp_path):
    """Only the RayJob's name changes: every night extends the one output."""
    night = time.strftime("%Y%m%d", time.gmtime())
    done, created = run_nightly(tmp_path, "geodet-detect Complete\\n"
                                          "geodet-detect-20260101 Failed\\n")
    assert done.returncode == 0, done.stderr
    job = yaml.safe_load(created.read_text())
    template = rayjob(NIGHTLY)
    assert job["metadata"]["name"] == f"{template['metadata']['name']}-{night}"
    assert job["spec"]["entrypoint"] == template["spec"]["entrypoint"]
    job["metadata"]["name"] = template["metadata"]["name"]
    assert job == template
