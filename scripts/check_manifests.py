"""Runs every runlens container of the Kubernetes manifests as the kubelet would, with its
own args and literal environment (paths under /run/runlens, /var/lib/runlens and
/etc/runlens moved to a temporary directory, a token file where --token-file points, 0.0.0.0
to 127.0.0.1), and checks what the manifest promises:

- the binary accepts every flag and RUNLENS_* variable (it starts and says "listening on");
- every containerPort is one it listens on;
- every gRPC probe gets SERVING from grpc.health.v1 on its port, for its service;
- every RUNLENS_ENDPOINT of an agent container names a socket a runlens container creates.

Usage: check_manifests.py RUNLENS_BIN MANIFEST...
"""

import os
import re
import subprocess
import sys
import tempfile
import time

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

MOVED = ("/run/runlens", "/var/lib/runlens", "/etc/runlens")


def fail(msg):
    sys.exit(f"check_manifests: FAILED: {msg}")


def pod_specs(path):
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if doc and doc.get("kind") in ("Deployment", "DaemonSet", "StatefulSet", "Job"):
                yield f"{path}: {doc['kind']}/{doc['metadata']['name']}", doc["spec"]["template"]["spec"]


def containers(spec):
    return spec.get("initContainers", []) + spec.get("containers", [])


def literal_env(container):
    """Literal values; $(VAR) references to the downward API are filled with examples."""
    env, example = {}, {}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: example.get(m.group(1), "x"),
                                    e["value"])
        else:
            example[e["name"]] = f"example-{e['name'].lower()}"
            env[e["name"]] = example[e["name"]]
    return env


def moved(value, tmp):
    for prefix in MOVED:
        value = value.replace(prefix, tmp + prefix)
    return value.replace("0.0.0.0:", "127.0.0.1:")


def health(port, service):
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def check_runlens(where, container, runlens, sockets):
    with tempfile.TemporaryDirectory() as tmp:
        for prefix in MOVED:
            os.makedirs(tmp + prefix)
        args = [moved(a, tmp) for a in container.get("args", [])]
        for arg in args:
            # The Secret's file, as the kubelet would mount it.
            if arg.startswith("--token-file="):
                with open(arg[len("--token-file="):], "w") as f:
                    f.write("manifest-check-token-0123456789\n")
        env = {k: moved(v, tmp) for k, v in literal_env(container).items()}
        # An unknown variable would be ignored silently: compare with what --help lists.
        known = set(re.findall(r"env: (RUNLENS_\w+)=", subprocess.run(
            [runlens, args[0], "--help"], capture_output=True, text=True).stdout))
        for name in env:
            if name.startswith("RUNLENS_") and name not in known:
                fail(f"{where}: runlens {args[0]} takes no variable {name} "
                     f"(it takes {sorted(known)})")
        env["RUNLENS_NVML_LIB"] = "none"  # no GPU here
        proc = subprocess.Popen([runlens, *args], env={**os.environ, **env},
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            if "listening on" not in line:
                proc.kill()
                fail(f"{where}: runlens {' '.join(args)} did not start: {proc.stderr.read()}")
            listened = set(re.findall(r"127\.0\.0\.1:(\d+)", line))
            for port in container.get("ports", []):
                if str(port["containerPort"]) not in listened:
                    fail(f"{where}: containerPort {port['containerPort']} is not one runlens "
                         f"listens on ({line.strip()})")
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = container.get(kind)
                if not probe:
                    fail(f"{where}: no {kind}")
                if "grpc" not in probe:
                    fail(f"{where}: {kind} is not a gRPC probe")
                port, service = probe["grpc"]["port"], probe["grpc"].get("service", "")
                status = health(port, service)
                if status != health_pb2.HealthCheckResponse.SERVING:
                    fail(f"{where}: {kind} on {port} for {service!r} answers {status}")
                print(f"ok  {where}: {kind} port {port} service {service!r}: SERVING")
            for arg in container.get("args", []):
                if arg.startswith("--listen=unix://"):
                    sockets.add(arg[len("--listen=unix://"):])
            print(f"ok  {where}: runlens accepts {len(args)} args and "
                  f"{sum(k.startswith('RUNLENS_') for k in env) - 1} RUNLENS_* variables; "
                  f"listens on {sorted(listened)}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.returncode != 0:
                fail(f"{where}: runlens exited with {proc.returncode} on SIGTERM")


def main():
    runlens, manifests = sys.argv[1], sys.argv[2:]
    for path in manifests:
        for where, spec in pod_specs(path):
            sockets, endpoints = set(), []
            for c in containers(spec):
                if "runlens" in c.get("image", "").split("/")[-1]:
                    check_runlens(f"{where} {c['name']}", c, runlens, sockets)
                for e in c.get("env", []):
                    if e["name"] == "RUNLENS_ENDPOINT":
                        endpoints.append((c["name"], e["value"]))
            for name, endpoint in endpoints:
                if not endpoint.startswith("unix://") or endpoint[7:] not in sockets:
                    fail(f"{where}: {name}'s RUNLENS_ENDPOINT {endpoint} is not a socket "
                         f"runlens listens on ({sorted(sockets)})")
                print(f"ok  {where}: {name} reaches runlens at {endpoint}")
    print("manifests: all checks passed")


if __name__ == "__main__":
    main()
