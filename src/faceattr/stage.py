"""What every stage script shares: logging set up once, user errors as one line and exit 1."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence

log = logging.getLogger("faceattr")
# Every error a user can act on is one of these: ConfigError, ManifestError, TooManyDropped,
# ChecksumError and UnsafeArchiveError all derive from ValueError.
USER_ERRORS = (ValueError, FileNotFoundError)


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--params`` option every stage takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    return p


def run(main: Callable[[Sequence[str] | None], None]) -> None:
    """Entry point of a stage script: logs, runs ``main`` and exits 1 with one clear message.

    Set ``FACEATTR_DEBUG=1`` to see the full traceback of a user error, ``FACEATTR_PROFILE=<file>``
    to have the stage's timings appended to ``<file>`` (:mod:`faceattr.profile`).
    """
    from faceattr import profile, threads
    from faceattr.distributed import current

    startup = profile.process_age()  # the stage module's imports ran before this call
    start = time.perf_counter()

    logging.basicConfig(
        level=logging.INFO if current().main else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    warnings.filterwarnings("ignore", module="mlflow")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # MLflow's HTTP retries: tracking reports the outcome
    from faceattr.tracking import Interrupted

    code: int | str | None = 1
    try:
        threads.configure()
        if current().world == 1:  # torchrun's ranks are one job
            threads.warn_if_sharing(log)
        main(sys.argv[1:])
        code = 0
        _report_outage()
    except (KeyboardInterrupt, Interrupted) as err:
        log.error("stopped (%s)", "SIGINT" if isinstance(err, KeyboardInterrupt) else "SIGTERM")
        code = 130 if isinstance(err, KeyboardInterrupt) else 143
        sys.exit(code)
    except USER_ERRORS as err:
        if os.environ.get("FACEATTR_DEBUG"):
            raise
        log.error("%s: %s", type(err).__name__, err)
        sys.exit(1)
    except SystemExit as err:  # argparse's --help and usage errors
        code = err.code
        raise
    finally:
        profile.record(startup, time.perf_counter() - start, code if isinstance(code, int) else 1)


def _report_outage() -> None:
    """List, once at the end, what the tracking store lost when it stopped answering mid-stage."""
    import sys as _sys

    tracking = _sys.modules.get("faceattr.tracking")
    missed = tracking.not_logged() if tracking is not None else {}
    if missed:
        log.warning(
            "MLflow stopped answering during this stage: %d run(s) incomplete; not logged: %s",
            len(missed),
            "; ".join(f"{run}: {', '.join(items)}" for run, items in missed.items()),
        )
