"""The container set-up in docker/ agrees with the code: settings, subcommands, images, Kafka, secrets.

No Docker engine and no network: the compose files are read as YAML (uninterpolated, as written), the
Dockerfiles as text. Each check is a function returning the problems it finds, run on the real files and,
where a broken input is easy to write, on one to show that it can fail.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import subprocess
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
from uv import find_uv_bin

from cli import build_parser
from core.settings import Settings
from streams.batching import BatchPolicy

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
COMPOSE_GPU = DOCKER / "compose.gpu.yaml"
DOCKERFILES = {name: DOCKER / f"{name}.Dockerfile" for name in ("worker-cpu", "worker-gpu", "api")}
LOCK = tomllib.loads((ROOT / "uv.lock").read_text())

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
_RUN = {"capture_output": True, "text": True, "check": True}
# uv reads uv.lock itself (uv is a dev dependency): no network, the lock as it is.
UV_EXPORT = [find_uv_bin(), "export", "--frozen", "--offline", "--no-emit-project", "--no-hashes", "--no-header"]
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|ACCESS_KEY|PRIVATE_KEY", re.IGNORECASE)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def services(path: Path = COMPOSE) -> dict[str, dict]:
    return load(path)["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str) -> str:
    """The value compose would use when only the defaults are set; a required variable becomes <NAME>."""
    return _INTERPOLATION.sub(lambda m: m.group(3) if m.group(2) in ("-", ":-") else f"<{m.group(1)}>", value)


def is_reference(value: str) -> bool:
    """The whole value comes from the environment and has no default (``${NAME}`` or ``${NAME:?msg}``)."""
    m = _INTERPOLATION.fullmatch(value.strip())
    return bool(m) and m.group(2) in (None, "?", ":?")


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments left out."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        instruction, _, args = pending.strip().partition(" ")
        out.append((instruction.upper(), args.strip()))
        pending = ""
    return out


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def build_file(service: dict, compose: Path = COMPOSE) -> Path | None:
    build = service.get("build")
    if build is None:
        return None
    if isinstance(build, str):
        return (compose.parent / build / "Dockerfile").resolve()
    return (compose.parent / build.get("context", ".") / build.get("dockerfile", "Dockerfile")).resolve()


def is_cvops(service: dict) -> bool:
    built = build_file(service)
    return bool(built and built.parent == DOCKER) or str(service.get("image", "")).startswith("cvops/")


def cvops_command_error(argv: list[str]) -> str | None:
    """None when ``cvops ARGV`` parses, else argparse's complaint."""
    if not argv:
        return "no command (the image's CMD would run, say it explicitly)"
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            build_parser().parse_args([str(a) for a in argv])
    except SystemExit:
        return err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else "argparse exited"
    return None


def unknown_settings(names: list[str]) -> list[str]:
    fields = {f.lower() for f in Settings.model_fields}
    return sorted({n for n in names if n.upper().startswith("CVOPS_") and n[6:].lower() not in fields})


def cvops_names_used() -> list[str]:
    """Every CVOPS_* name the compose files and Dockerfiles set or interpolate."""
    names = []
    for path in (COMPOSE, COMPOSE_GPU):
        names += re.findall(r"\bCVOPS_[A-Za-z0-9_]+", path.read_text())
    for path in DOCKERFILES.values():
        for instruction, args in dockerfile(path):
            if instruction in ("ENV", "ARG"):
                names += re.findall(r"\bCVOPS_[A-Za-z0-9_]+", args)
    return names


def hardcoded_secrets(svcs: dict[str, dict]) -> list[str]:
    """Secret-looking variables with a literal value, and URLs with a literal password."""
    problems = []
    for name, svc in svcs.items():
        for key, value in environment(svc).items():
            if _SECRET_NAME.search(key) and not is_reference(value):
                problems.append(f"{name}: {key} is set to a literal value")
            for m in re.finditer(r"://[^:/@\s]+:([^@\s]+)@", value):
                if not is_reference(m.group(1)):
                    problems.append(f"{name}: {key} holds a URL with a literal password")
    return problems


def effective_settings(env: dict[str, str]) -> Settings:
    fields = {k[6:].lower(): interpolate(v) for k, v in env.items() if k.upper().startswith("CVOPS_")}
    return Settings(_env_file=None, **fields)


def locked_version(name: str) -> str:
    """The version of ``name`` in uv.lock (one version: the lock resolves it once for every extra)."""
    versions = {p["version"] for p in LOCK["package"] if p["name"] == name}
    assert len(versions) == 1, (name, versions)
    return versions.pop()


def locked_requirements(extra: str) -> dict[str, str]:
    """Name -> version of what ``uv sync --extra EXTRA`` installs from uv.lock."""
    out = subprocess.run([*UV_EXPORT, "--no-annotate", "--extra", extra], cwd=ROOT, **_RUN).stdout
    return dict(line.split(" ", 1)[0].split("==") for line in out.splitlines() if "==" in line)


def uv_syncs(path: Path) -> list[list[str]]:
    """Each ``uv sync`` of a Dockerfile's RUN steps, as an argument list (shell variables left as written)."""
    runs = [a for i, a in dockerfile(path) if i == "RUN"]
    parts = [shlex.split(part) for run in runs for part in run.split("&&")]
    return [argv for argv in parts if argv[:2] == ["uv", "sync"]]


def extras(argv: list[str]) -> set[str]:
    return {argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--extra"}


# --- the files ------------------------------------------------------------------------------------------


def test_compose_files_name_the_expected_services():
    svcs = services()
    for expected in ("kafka", "clickhouse", "topics", "api", "store-writer", "gateway"):
        assert expected in svcs, f"compose.yaml has no {expected} service"
    gpu = services(COMPOSE_GPU)
    assert set(gpu) <= set(svcs), f"compose.gpu.yaml overrides services the base lacks: {set(gpu) - set(svcs)}"


def test_every_cvops_variable_is_a_setting():
    names = cvops_names_used()
    assert "CVOPS_KAFKA_BOOTSTRAP" in names and "CVOPS_STORE_DSN" in names
    assert unknown_settings(names) == []
    assert unknown_settings(["CVOPS_KAFKA_BOOTSTRAP", "CVOPS_KAFKA_BOOTSTAP"]) == ["CVOPS_KAFKA_BOOTSTAP"]


def test_cvops_services_share_one_environment_and_it_validates():
    svcs = services()
    cvops = {n: s for n, s in svcs.items() if is_cvops(s)}
    assert len(cvops) >= 6, sorted(cvops)
    shared = environment(svcs["topics"])
    for name, svc in cvops.items():
        env = environment(svc)
        missing = {k: v for k, v in shared.items() if env.get(k) != v}
        assert not missing, f"{name} differs from the shared CVOPS_ block in {sorted(missing)}"
        effective_settings(env)  # raises on a value Settings refuses
    assert shared["CVOPS_REPLICATION_FACTOR"] == "1"
    for name, svc in services(COMPOSE_GPU).items():
        s = effective_settings({**environment(svcs[name]), **environment(svc)})
        BatchPolicy(s.batch_max_size, s.batch_max_wait_ms, s.preferred_sizes)  # preferred sizes within the max


def test_service_commands_are_cvops_subcommands():
    svcs = services()
    for name, svc in svcs.items():
        if is_cvops(svc):
            assert cvops_command_error(svc.get("command")) is None, (name, svc.get("command"))
    for name, path in DOCKERFILES.items():
        steps = dict(dockerfile(path))
        assert exec_form(steps["ENTRYPOINT"]) == ["cvops"], name
        assert cvops_command_error(exec_form(steps["CMD"])) is None, name
    assert cvops_command_error(["wroker"]) is not None
    assert cvops_command_error(["gateway", "--camras", "4"]) is not None


def test_topics_store_writer_api_and_gateway_run_what_they_are_named_for():
    svcs = services()
    assert svcs["topics"]["command"] == ["topics"]
    assert svcs["topics"].get("restart") == "no", "topics is a one-shot service"
    assert svcs["store-writer"]["command"] == ["store-writer"]
    assert svcs["api"]["command"] == ["api"]
    gateway = svcs["gateway"]["command"]
    args = build_parser().parse_args(gateway)
    assert (args.command, args.cameras, args.fps) == ("gateway", 4, 5.0)
    assert (svcs["gateway"]["build"].get("args") or {}).get("EXTRAS") == "local", "the demo footage needs [local]"


def test_kafka_is_3x_in_kraft_mode():
    svcs = services()
    kafka = [(n, s) for n, s in svcs.items() if re.match(r"(docker\.io/)?(apache|bitnami)/kafka:", s.get("image", ""))]
    assert len(kafka) == 1, [n for n, _ in kafka]
    name, svc = kafka[0]
    tag = svc["image"].rsplit(":", 1)[1]
    assert re.fullmatch(r"3\.\d+(\.\d+)?(-[\w.-]+)?", tag), f"Kafka {tag}: faust needs a 3.x broker"
    env = {k.replace("KAFKA_CFG_", "KAFKA_"): v for k, v in environment(svc).items()}
    roles = {r.strip() for r in env.get("KAFKA_PROCESS_ROLES", "").split(",")}
    assert {"broker", "controller"} <= roles, f"not KRaft: process roles {roles}"
    assert env.get("KAFKA_CONTROLLER_QUORUM_VOTERS") and env.get("KAFKA_CONTROLLER_LISTENER_NAMES")
    assert not any("ZOOKEEPER" in k for k in env), "KRaft runs without ZooKeeper"
    assert not any("zookeeper" in s.get("image", "") for s in svcs.values())
    assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false", "cvops creates its topics itself"
    # The workers reach the broker at the address it advertises.
    bootstrap = environment(svcs["topics"])["CVOPS_KAFKA_BOOTSTRAP"]
    for address in bootstrap.split(","):
        host, port = address.strip().rsplit(":", 1)
        assert host == name, f"{address} is not the kafka service"
        assert f"//{host}:{port}" in env["KAFKA_ADVERTISED_LISTENERS"], env["KAFKA_ADVERTISED_LISTENERS"]


def test_clickhouse_server_matches_the_store_dsn():
    svcs = services()
    ch = svcs["clickhouse"]
    assert re.fullmatch(r"clickhouse/clickhouse-server:\d+\.\d+(\.\d+)*(-[\w.-]+)?", ch["image"]), ch["image"]
    env = environment(ch)
    dsn = environment(svcs["store-writer"])["CVOPS_STORE_DSN"]
    url = urlsplit(interpolate(dsn))
    assert url.scheme == "http" and url.hostname == "clickhouse" and url.port == 8123, dsn
    assert url.username == env["CLICKHOUSE_USER"] == "cvops"
    assert url.path.strip("/") == env["CLICKHOUSE_DB"] == "cvops"
    assert is_reference(env["CLICKHOUSE_PASSWORD"]), "the ClickHouse password comes from the environment"
    assert url.password == interpolate(env["CLICKHOUSE_PASSWORD"]), "DSN and server use one password variable"


def test_api_port_host_and_store_writer():
    svcs = services()
    api = svcs["api"]
    env = environment(api)
    port = env["CVOPS_API_PORT"]
    published = [str(p) for p in api.get("ports", [])]
    assert published, "the API publishes its port"
    assert all(interpolate(p).rsplit(":", 1)[-1] == port for p in published), (published, port)
    assert env["CVOPS_API_HOST"] == "0.0.0.0", "the API must listen beyond the container's loopback"
    assert env["CVOPS_API_STORE_WRITER"].lower() == "false", "the store-writer service writes, not the API"
    for test in api["healthcheck"]["test"]:
        if "http://" in test:
            assert f":{port}/" in test, "the API healthcheck asks another port"
    steps = dockerfile(DOCKERFILES["api"])
    env_line = " ".join(a for i, a in steps if i == "ENV")
    assert f"CVOPS_API_PORT={port}" in env_line and ("EXPOSE", port) in steps
    others = [n for n, s in svcs.items() if s.get("ports") and n != "api"]
    assert others == [], f"only the API publishes a port, not {others}"


def test_images_come_from_existing_dockerfiles_or_pinned_tags():
    for compose in (COMPOSE, COMPOSE_GPU):
        for name, svc in services(compose).items():
            path = build_file(svc, compose)
            if path is not None:
                assert path.is_file(), f"{compose.name}:{name} builds {path}, which does not exist"
                assert path.parent == DOCKER and path.name in {p.name for p in DOCKERFILES.values()}
                context = (compose.parent / svc["build"]["context"]).resolve()
                assert context == ROOT, f"{name}: the build context must be the repository root"
            else:
                image = svc.get("image", "")
                assert compose == COMPOSE_GPU or ":" in image, f"{name}: image {image!r} has no tag"
                assert not image.endswith(":latest"), f"{name}: pin the image, not latest"


def test_dockerfiles_copy_what_exists_and_what_their_dockerignore_lets_in():
    for name, path in DOCKERFILES.items():
        ignore = path.with_name(path.name + ".dockerignore").read_text().splitlines()
        allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
        steps = dockerfile(path)
        assert steps[0][0] in ("FROM", "ARG"), name
        for instruction, args in steps:
            if instruction != "COPY" or "--from=" in args:
                continue
            *sources, _ = [a for a in shlex.split(args) if not a.startswith("--")]
            for src in sources:
                assert (ROOT / src).exists(), f"{name}: COPY {src}: no such path in the repository"
                assert src.rstrip("/") in allowed, f"{name}: COPY {src} but its .dockerignore leaves it out"
        users = [a for i, a in steps if i == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{name} runs as root"


def test_gpu_image_installs_onnxruntime_gpu_and_never_onnxruntime():
    text = DOCKERFILES["worker-gpu"].read_text()
    steps = dockerfile(DOCKERFILES["worker-gpu"])
    base = [a for i, a in steps if i == "FROM"][-1]
    assert re.match(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu22\.04$", base), base
    # The CUDA base follows the locked wheel's build: a new onnxruntime-gpu in uv.lock means a look at it.
    version = locked_version("onnxruntime-gpu")
    assert f"onnxruntime-gpu {version} from" in text, f"worker-gpu.Dockerfile does not say which CUDA {version} needs"
    syncs = uv_syncs(DOCKERFILES["worker-gpu"])
    assert syncs and all(extras(argv) == {"gpu"} and "--locked" in argv for argv in syncs), syncs
    runs = [a for i, a in steps if i == "RUN"]
    installs = [shlex.split(part) for run in runs for part in run.split("&&") if "pip install" in part]
    assert installs
    for argv in installs:
        assert not [a for a in argv if re.match(r"onnxruntime", a)], f"installs ONNX Runtime outside the lock: {argv}"
        if "/tmp/cvops" in argv:
            assert "--no-deps" in argv, f"the project's own dependencies would be resolved again: {argv}"
    assert "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider" in text


def test_lock_installs_one_onnxruntime_per_extra():
    """What the images' ``uv sync`` installs, read from uv.lock by uv itself: one ONNX Runtime build per extra."""
    gpu, cpu = (set(locked_requirements(extra)) for extra in ("gpu", "cpu"))
    assert "onnxruntime-gpu" in gpu and "onnxruntime" not in gpu, sorted(gpu)
    assert "onnxruntime" in cpu and "onnxruntime-gpu" not in cpu, sorted(cpu)
    assert locked_version("onnxruntime") == locked_version("onnxruntime-gpu"), "one ONNX Runtime release, two builds"
    both = subprocess.run([*UV_EXPORT, "--extra", "cpu", "--extra", "gpu"], cwd=ROOT, capture_output=True, text=True)
    assert both.returncode != 0 and "incompatible" in both.stderr, both.stderr


def test_cpu_images_install_the_cpu_wheel():
    for name in ("worker-cpu", "api"):
        text = DOCKERFILES[name].read_text()
        assert "onnxruntime-gpu" not in text, name
        assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE), name
        syncs = uv_syncs(DOCKERFILES[name])
        assert syncs and all("cpu" in extras(argv) and "--locked" in argv for argv in syncs), (name, syncs)
        assert not any("gpu" in extras(argv) for argv in syncs), name
    # The gateway's EXTRAS=local becomes --extra local beside --extra cpu.
    run = next(a for i, a in dockerfile(DOCKERFILES["worker-cpu"]) if i == "RUN" and "uv sync" in a)
    script = run.replace("cd /tmp/cvops", "true").replace("uv sync", "echo uv sync")
    out = subprocess.run(["sh", "-c", script], env={"EXTRAS": "local,dev", "PATH": "/usr/bin:/bin"}, **_RUN)
    assert extras(shlex.split(out.stdout)) == {"cpu", "local", "dev"}, out.stdout


def test_images_install_with_the_uv_of_dev_and_of_the_lock():
    """One uv everywhere: ./dev, the images and the lock (its format is uv's)."""
    dev_version = re.search(r"^UV_VERSION=(\S+)$", (ROOT / "dev").read_text(), re.MULTILINE).group(1)
    assert locked_version("uv") == dev_version
    for name, path in DOCKERFILES.items():
        assert re.findall(r"\buv==([\w.]+)", path.read_text()) == [dev_version], name


def test_at_least_two_workers_and_enough_partitions():
    svcs = services()
    workers = {n: s for n, s in svcs.items() if is_cvops(s) and (s.get("command") or [None])[0] == "worker"}
    assert len(workers) >= 2, f"workers: {sorted(workers)}"
    assert len({s["image"] for s in workers.values()}) == 1, "the workers run one image"
    partitions = int(environment(svcs["topics"])["CVOPS_FRAMES_PARTITIONS"])
    assert partitions >= len(workers), "a worker beyond the partition count idles"
    gpu = services(COMPOSE_GPU)
    assert set(gpu) == set(workers), "compose.gpu.yaml moves every worker to the GPU image"
    for name, svc in gpu.items():
        assert build_file(svc, COMPOSE_GPU) == DOCKERFILES["worker-gpu"].resolve(), name
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices), name


def test_dependencies_and_healthchecks():
    svcs = services()
    for name, svc in svcs.items():
        for target, spec in (svc.get("depends_on") or {}).items():
            assert target in svcs, f"{name} depends on a missing {target}"
            condition = spec.get("condition", "service_started")
            if condition == "service_healthy":
                assert "healthcheck" in svcs[target], f"{name} waits for {target} to be healthy; it has no check"
            if condition == "service_completed_successfully":
                assert svcs[target].get("restart", "no") == "no", f"{target} restarts: it never completes"
        if is_cvops(svc) and name != "topics":
            condition = (svc.get("depends_on") or {}).get("topics", {}).get("condition")
            assert condition == "service_completed_successfully", f"{name} starts before the topics exist"
    for name in ("kafka", "clickhouse", "api"):
        assert svcs[name].get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    assert svcs["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    for name in ("api", "store-writer"):
        assert svcs[name]["depends_on"]["clickhouse"]["condition"] == "service_healthy", name


def test_no_secret_is_hard_coded():
    for compose in (COMPOSE, COMPOSE_GPU):
        assert hardcoded_secrets(services(compose)) == [], compose.name
    for path in DOCKERFILES.values():
        for instruction, args in dockerfile(path):
            if instruction in ("ENV", "ARG"):
                assert not _SECRET_NAME.search(args), f"{path.name}: {instruction} {args}"
    assert hardcoded_secrets({"x": {"environment": {"CLICKHOUSE_PASSWORD": "hunter2"}}})
    assert hardcoded_secrets({"x": {"environment": {"CLICKHOUSE_PASSWORD": "${PW:-hunter2}"}}})
    assert hardcoded_secrets({"x": {"environment": ["CVOPS_STORE_DSN=http://cvops:hunter2@ch:8123/cvops"]}})
    assert not hardcoded_secrets({"x": {"environment": {"CVOPS_STORE_DSN": "http://cvops:${PW:?set}@ch/cvops"}}})


@pytest.mark.parametrize("value", ["${A}", "${A:?set A}", "${A?}"])
def test_reference_forms(value):
    assert is_reference(value)
    assert not is_reference(f"x{value}")
