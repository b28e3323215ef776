"""Print `name==floor` pins for every `name>=floor` requirement in pyproject.toml (the project's
dependencies plus the extras named with --extras), for `make test-floors`. torch is left out: it is
installed first, from TORCH_SPEC."""

from __future__ import annotations

import argparse
import re
import tomllib

SKIP = {"torch"}


def floors(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    reqs = list(project["dependencies"])
    for extra in extras:
        reqs += project["optional-dependencies"][extra]
    pins = {}
    for req in reqs:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)\s*", req)
        if m is None:
            raise SystemExit(f"{pyproject}: {req!r} has no '>=' floor to pin")
        if m.group(1).lower() not in SKIP:
            pins[m.group(1).lower()] = m.group(2)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pyproject")
    ap.add_argument("--extras", nargs="*", default=[])
    args = ap.parse_args()
    print("\n".join(floors(args.pyproject, args.extras)))
