"""`moe-operator crds`: write (or check) the CRDs generated from the API models.

Imported eagerly by the CLI to add arguments, so the pydantic models are imported only inside run().
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="crds", metavar="DIR", help="directory for the CRD YAML files (default: crds)")
    parser.add_argument(
        "--chart",
        metavar="DIR",
        help="also write into DIR/crds (a Helm chart, e.g. charts/moe-operator)",
    )
    parser.add_argument(
        "--docs",
        metavar="FILE",
        help="also refresh the generated field reference in FILE (e.g. docs/api.md)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the files that differ from the generator's output",
    )


def run(args: argparse.Namespace) -> int:
    from moe_operator.api.crd import check_crds, write_crds
    from moe_operator.api.docs import docs_drift, update_docs

    docs = Path(args.docs) if getattr(args, "docs", None) else None
    dirs = [Path(args.out)]
    if args.chart:
        dirs.append(Path(args.chart) / "crds")
    if args.check:
        problems = [p for d in dirs for p in check_crds(d)]
        if docs is not None and docs_drift(docs):
            problems.append(f"{docs}: generated field reference differs")
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            print(
                "CRDs are out of date: run `moe-operator crds" + (f" --chart {args.chart}" if args.chart else "") + "`",
                file=sys.stderr,
            )
            return 1
        print("CRDs up to date: " + ", ".join(str(d) for d in dirs))
        return 0
    for d in dirs:
        for path in write_crds(d):
            print(path)
    if docs is not None and update_docs(docs):
        print(docs)
    return 0
