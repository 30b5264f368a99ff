import argparse


def add_runner_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info")


async def run_pod_runner(a: argparse.Namespace) -> int:
    raise NotImplementedError
