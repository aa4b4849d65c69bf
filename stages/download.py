"""Stage `download`: fetch MNIST from the first working source, verify its MD5s.

Reads: data.sources, data.local_dir, data.timeout. Writes: the raw IDX directory.
"""

from __future__ import annotations

import logging

from mnistlab import download
from mnistlab.core.cli import parse_args
from mnistlab.core.config import load_params
from mnistlab.harness.runtime import stage_main
from mnistlab.harness.tracking import stage_run

log = logging.getLogger("mnistlab.download")
# It imports no torch: a cold start beats waiting for a warm server to import
# torch, so under DVC it runs in its own process (see mnistlab.harness.warm).
WARM = False


@stage_main
def main(argv: list[str] | None = None) -> None:
    args = parse_args(__doc__, argv, out="directory for the four IDX files")
    params = load_params()

    with stage_run("download", {"data": params.data}) as run:
        settings = download.FetchSettings(
            local_dir=params.data.local_dir, timeout=params.data.timeout
        )
        result = download.download(args.out, params.data.sources, settings)
        for source, why in result.failures.items():
            log.warning("source %s failed: %s", source, why)
        log.info(
            "MNIST from %s: %d bytes verified in %.1fs", result.source, result.bytes, result.seconds
        )
        run.set_tags({"source": result.source, **{f"md5.{k}": v for k, v in result.md5.items()}})
        run.log_metrics({"bytes": result.bytes, "seconds": result.seconds})


if __name__ == "__main__":
    main()
