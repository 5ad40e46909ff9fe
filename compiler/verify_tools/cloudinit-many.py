"""moat validator helper: cloud-init's own checks on many files in one Python process.

usage: python3 cloudinit-many.py schema FILE... | net-convert FILE... | auto FILE...
Run by cloudinit-lib.sh's cloud_init_many with cloud-init importable. Each file gets what the
command line gives one file, through cloud-init's own argument parser and handler:
  schema       `cloud-init schema -c FILE`;
  net-convert  `cloud-init devel net-convert --network-data FILE --kind yaml --distro debian
               --output-kind networkd|eni` into a temporary directory;
  auto         net-convert for a file named network-config*, schema for any other (a seed's
               user-data), so one process checks both kinds (cloudinit.sh).
Starting cloud-init's Python costs about half a second; once per batch instead of once per file.
Prints one line per rejected file; exits 1 when any file is rejected (the build then asks the
single-file wrapper for each file's own message), 0 when all pass.
"""

import os
import sys
import tempfile


def schema(path: str) -> None:
    from cloudinit.config.schema import get_parser, handle_schema_args

    handle_schema_args("schema", get_parser().parse_args(["-c", path]))


def net_convert(path: str) -> None:
    from cloudinit.cmd.devel.net_convert import get_parser, handle_args

    with tempfile.TemporaryDirectory(prefix="moat-netconvert.") as tmp:
        for renderer in ("networkd", "eni"):
            args = get_parser().parse_args([
                "--network-data", path, "--kind", "yaml", "--distro", "debian",
                "--output-kind", renderer, "--directory", f"{tmp}/{renderer}"])
            try:
                handle_args("net-convert", args)
            finally:
                args.network_data.close()


CHECKS = {"schema": schema, "net-convert": net_convert}


def check_of(mode: str, path: str) -> str:
    """The check a file gets: `mode`, or under auto the one its name calls for."""
    if mode != "auto":
        return mode
    return "net-convert" if os.path.basename(path).startswith("network-config") else "schema"


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in (*CHECKS, "auto"):
        print(f"usage: {sys.argv[0]} schema|net-convert|auto FILE...", file=sys.stderr)
        return 2
    rejected = 0
    for path in argv[1:]:
        check = check_of(argv[0], path)
        try:
            CHECKS[check](path)
        except SystemExit as stop:  # cloud-init's error() on a rejection
            if stop.code not in (0, None):
                rejected += 1
                print(f"{path}: rejected by cloud-init {check}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - cloud-init raises what its parsers raise
            rejected += 1
            print(f"{path}: cloud-init {check}: {type(err).__name__}: {err}", file=sys.stderr)
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
