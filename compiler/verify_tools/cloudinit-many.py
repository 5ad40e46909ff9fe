"""moat validator helper: cloud-init's own checks on many files in one Python process.

usage: python3 cloudinit-many.py schema FILE... | net-convert FILE...
Run by cloudinit-lib.sh's cloud_init_many with cloud-init importable. Each file gets what the
command line gives one file, through cloud-init's own argument parser and handler:
  schema       `cloud-init schema -c FILE`;
  net-convert  `cloud-init devel net-convert --network-data FILE --kind yaml --distro debian
               --output-kind networkd|eni` into a temporary directory.
Starting cloud-init's Python costs about half a second; once per batch instead of once per file.
Prints one line per rejected file; exits 1 when any file is rejected (the build then asks the
single-file wrapper for each file's own message), 0 when all pass.
"""

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


def main(argv: list[str]) -> int:
    checks = {"schema": schema, "net-convert": net_convert}
    if len(argv) < 2 or argv[0] not in checks:
        print(f"usage: {sys.argv[0]} schema|net-convert FILE...", file=sys.stderr)
        return 2
    rejected = 0
    for path in argv[1:]:
        try:
            checks[argv[0]](path)
        except SystemExit as stop:  # cloud-init's error() on a rejection
            if stop.code not in (0, None):
                rejected += 1
                print(f"{path}: rejected by cloud-init {argv[0]}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - cloud-init raises what its parsers raise
            rejected += 1
            print(f"{path}: cloud-init {argv[0]}: {type(err).__name__}: {err}", file=sys.stderr)
    return 1 if rejected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
