"""GPU memory stress (seed Section 7): allocate GPU memory, hold it, release it, so you
can see runlens's snapshots follow.

With CUDA (torch installed with CUDA support):
    gpu_stress.py --mib 8192 --seconds 5 [--device 0]
Without a GPU, play the same allocation on the fake NVML library's scenario file (the one
named by RUNLENS_FAKE_NVML_SCENARIO for `runlens serve --nvml-lib .../librunlens_fake_nvml.so`):
    gpu_stress.py --mib 8192 --seconds 5 --fake-scenario scenario.json [--device 0]
"""

import argparse
import json
import os
import sys
import time


def with_torch(mib: int, seconds: float, device: int) -> int:
    try:
        import torch
    except ImportError:
        print("gpu_stress: torch is not installed, so no GPU memory can be allocated; "
              "install torch with CUDA support, or use --fake-scenario", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("gpu_stress: torch sees no CUDA device (no GPU, no driver, or a CPU-only torch "
              "build); nothing allocated. Use --fake-scenario to play an allocation on the "
              "fake NVML library instead", file=sys.stderr)
        return 2
    x = torch.empty(mib * 2**20, dtype=torch.uint8, device=f"cuda:{device}")
    x.fill_(1)
    torch.cuda.synchronize()
    print(f"holding {mib} MiB on cuda:{device} for {seconds} s", flush=True)
    time.sleep(seconds)
    del x
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    print(f"done: released {mib} MiB on cuda:{device}", flush=True)
    return 0


def replace(path: str, scenario: dict) -> None:
    """Atomic rewrite: the fake library never reads half a file."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(scenario, f)
    os.replace(tmp, path)


def with_fake(mib: int, seconds: float, device: int, path: str) -> int:
    with open(path) as f:
        scenario = json.load(f)
    dev = scenario["devices"][device]
    before = dev.get("memory_used_bytes", 0)
    free = dev["memory_total_bytes"] - before - dev.get("memory_reserved_bytes", 0)
    if mib * 2**20 > free:
        print(f"gpu_stress: fake GPU {device} has only {free // 2**20} MiB free", file=sys.stderr)
        return 2
    dev["memory_used_bytes"] = before + mib * 2**20
    replace(path, scenario)
    print(f"holding {mib} MiB on fake GPU {device} for {seconds} s", flush=True)
    try:
        time.sleep(seconds)
    finally:
        dev["memory_used_bytes"] = before
        replace(path, scenario)
    print(f"done: released {mib} MiB on fake GPU {device}", flush=True)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=8192, help="how much GPU memory")
    p.add_argument("--seconds", type=float, default=5, help="how long to hold it")
    p.add_argument("--device", type=int, default=0, help="GPU index")
    p.add_argument("--fake-scenario", help="a fake NVML scenario file to play the allocation on")
    a = p.parse_args()
    if a.fake_scenario:
        return with_fake(a.mib, a.seconds, a.device, a.fake_scenario)
    return with_torch(a.mib, a.seconds, a.device)


if __name__ == "__main__":
    sys.exit(main())
