"""How long ``load_network`` takes for all six networks at full size (random init and from .pth files).

python benchmarks/load_networks.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ditto_research.models import NETWORK_NAMES, load_network


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(2)
    random_s, file_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for run in range(args.runs):
            t0 = time.perf_counter()
            nets = {name: load_network(name, seed=run) for name in NETWORK_NAMES}
            random_s.append(time.perf_counter() - t0)
            paths = {}
            for name, net in nets.items():
                state = net.state_dict()
                obj = (
                    {"model_state_dict": state}
                    if name == "lmdm"
                    else ({"retarget_shoulder": state} if name == "stitch_network" else state)
                )
                paths[name] = Path(tmp) / f"{name}.pth"
                torch.save(obj, paths[name])
            t0 = time.perf_counter()
            for name in NETWORK_NAMES:
                load_network(name, paths[name])
            file_s.append(time.perf_counter() - t0)
    print(
        f"load_network x6, random init : median {statistics.median(random_s):.2f} s  "
        f"(runs {[round(x, 2) for x in random_s]})"
    )
    print(
        f"load_network x6, from .pth   : median {statistics.median(file_s):.2f} s  "
        f"(runs {[round(x, 2) for x in file_s]})"
    )


if __name__ == "__main__":
    main()
