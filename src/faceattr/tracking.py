"""MLflow observes; DVC records. One run per stage execution and one per fine-tuning variant.

Tracking is on unless ``FACEATTR_TRACKING=off``. The store is ``MLFLOW_TRACKING_URI`` when set,
else a local SQLite file ``mlflow.db`` in the working directory (browse it with ``faceattr ui``).
Runs are flat (no parent run to expand): the UI's runs table lists every variant, and its
"Group by" on the tag ``faceattr.pipeline`` (git commit) gathers one pipeline's runs. What links
a fine-tuning run to its evaluation is the run id the stage writes into its DVC outputs
(``mlflow_run.json`` beside the checkpoint), never the commit.

A store that cannot be reached when a stage starts stops it with one line (``TrackingUnavailable``)
naming the URI and how to run without tracking. A store that goes away later costs no work: from
the first failed call on, every run of the process is inert (``OUTAGE``, a process-wide latch), so
the stage finishes all its runs and writes its outputs, warns once, and lists what was not logged. SIGTERM and
SIGINT end the run as KILLED with the epoch it reached; any other exception as FAILED.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import signal
import subprocess
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from faceattr.config import flatten
from faceattr.distributed import current
from faceattr.profile import phase

log = logging.getLogger(__name__)
EXPERIMENT = "faceattr"  # fine-tuning runs, one per variant and seed
VARIANTS_EXPERIMENT = "faceattr-variants"  # one run per variant: mean and std over its seeds (evaluate)
STAGES_EXPERIMENT = "faceattr-stages"  # every other stage's runs
DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow's UI opens an experiment of this kind on its runs table (3.x otherwise guesses GenAI)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# A server that does not answer fails in seconds, not after MLflow's default minutes of retries.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}
RUN_LINK = "mlflow_run.json"  # written by finetune_multitask beside its checkpoint

# The runs table's default columns, as an MLflow shared view (an experiment tag the UI reads when its
# address carries ``viewStateShareKey``; ``faceattr ui`` prints that address): without it MLflow
# shows no metric column at all. Per experiment: the test metrics first, then what names a row.
VIEW_KEY = "faceattr"
TEST_METRICS = ("test_gender_acc", "test_age_mae", "test_landmark_nme", "test_attr_acc")
DEFAULT_VIEWS = {
    EXPERIMENT: [
        *(f"metrics.`{m}`" for m in TEST_METRICS),
        # MLflow sorts these by name: pretraining, seed, tasks, train_fraction (the backbone opens the run name)
        *(f"params.`{p}`" for p in ("seed", "pretraining", "tasks", "train_fraction")),
    ],
    VARIANTS_EXPERIMENT: [
        *(f"metrics.`{m}{s}`" for m in TEST_METRICS[:3] for s in ("", "_std")),
        "metrics.`test_attr_acc`",
        "params.`seeds`",
    ],
}


def default_view(experiment: str) -> str | None:
    """The shared view (JSON) that the UI opens ``experiment`` with, sorted by test gender accuracy."""
    columns = DEFAULT_VIEWS.get(experiment)
    if columns is None:
        return None
    return json.dumps({"selectedColumns": columns, "orderByKey": "metrics.`test_gender_acc`", "orderByAsc": False})


class TrackingUnavailable(ValueError):
    """The tracking store could not be reached when a stage started (a user error: exit 1)."""


class Interrupted(BaseException):
    """SIGTERM arrived (a scheduler, a timeout, ``kill``): unwinds like KeyboardInterrupt."""


def enabled() -> bool:
    """Whether runs are recorded: not with ``FACEATTR_TRACKING=off`` (tests), nor on torchrun ranks > 0."""
    if current().rank != 0:
        return False
    return os.environ.get("FACEATTR_TRACKING", "on").lower() not in ("off", "0", "false", "no")


def tracking_uri() -> str:
    """The tracking URI as configured (``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db``): what
    messages and ``mlflow_run.json`` name. A process connects to :func:`store_uri`."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def store_uri() -> str:
    """The store this process connects to: :func:`tracking_uri`, a relative SQLite path taken from
    the project's folder when DVC runs the stage (``DVC_ROOT``), else from the current folder.
    ``dvc exp run --queue`` and ``--temp`` run the stages in a temporary copy of the workspace and
    set ``DVC_ROOT`` to the workspace itself, so their runs land in the project's store, not in a
    copy deleted when the experiment ends."""
    root = os.environ.get("DVC_ROOT")
    return absolute_uri(tracking_uri(), Path(root)) if root else tracking_uri()


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts (logged models, meta.json):
    ``mlruns/<experiment>`` beside the database, not MLflow's default under the current folder,
    which under ``dvc exp run --queue`` is a temporary copy. None for other stores (a tracking
    server decides)."""
    path = _sqlite_file(uri)
    return (path.resolve().parent / "mlruns" / experiment).as_uri() if path is not None else None


def absolute_uri(uri: str, root: Path) -> str:
    """``uri`` with a relative SQLite path made absolute against ``root`` (the project), so a UI
    started from a subfolder opens the project's store, not an empty one beside it."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri.startswith(prefix + "/"):
        return uri
    return prefix + str((root / uri[len(prefix) :]).resolve())


def git_commit() -> str:
    """Current commit (with ``-dirty`` for uncommitted changes), or ``unknown`` outside git."""
    return _git_commit(os.getcwd())


@functools.cache
def _git_commit(cwd: str) -> str:  # once per process and folder: a stage runs 45 runs
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def metric_name(name: str) -> str:
    """MLflow accepts alphanumerics, ``_ - . / :`` and spaces in names; anything else becomes ``_``."""
    return re.sub(r"[^\w\-./: ]", "_", name)


class _Outage:
    """Process-wide: whether the store has answered once, and whether it has stopped answering.

    After the first failure every run of the process is inert (a 45-run stage does not die at
    the next run's start, nor evaluate in its linked runs), and what each run could not log is
    listed at the end (``not_logged``).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.answered = False  # a run was created: a later failure is an outage, not a bad URI
        self.down: str | None = None  # why the store stopped answering
        self.missed: dict[str, list[str]] = {}  # run (name or id) -> what it could not log

    def fail(self, err: BaseException) -> None:
        if self.down is None:
            log.warning(
                "MLflow at %s stopped answering (%s); the stage goes on without tracking",
                tracking_uri(),
                _short(err),
            )
            self.down = _short(err)

    def miss(self, run: str, what: str) -> None:
        self.missed.setdefault(run, []).append(what)


OUTAGE = _Outage()


def not_logged() -> dict[str, list[str]]:
    """What this process's runs could not log since the store stopped answering, by run."""
    return {run: list(dict.fromkeys(items)) for run, items in OUTAGE.missed.items()}


class Run:
    """What a stage may log; every method is a no-op when tracking is off.

    A call that fails (the store went away) is not retried: from then on this run and every later
    one in the process stop logging (``OUTAGE``), a warning is logged once and what could not be
    logged is remembered, so training never waits on or dies of the tracking store.
    """

    def __init__(
        self, client: Any = None, run_id: str | None = None, reopened: bool = False, name: str | None = None
    ) -> None:
        self._client, self.run_id = client, run_id
        self.reopened = reopened  # an earlier, finished run continued (``tracked_run(reopen=...)``)
        self.name = name  # set on a run that was never created because the store was down
        self.epoch = 0  # the last epoch logged by ``log_curve``
        self.missed: list[str] = []
        self.final_status = "FINISHED"  # how ``tracked_run`` ends a run that returns (KILLED: not run)

    @property
    def active(self) -> bool:
        return self._client is not None and OUTAGE.down is None

    def _miss(self, what: str) -> None:
        self.missed.append(what)
        OUTAGE.miss(self.run_id or self.name or "?", what)

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self._client is None or OUTAGE.down is not None:
            if self.run_id is not None or self.name is not None:
                self._miss(what)
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # the store is gone: keep training, stop logging
            OUTAGE.fail(err)
            self._client = None
            self._miss(what)
            return None

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Log numeric metrics (nested dicts flattened to dotted names) in one batch call."""
        if self._client is None and self.run_id is None and self.name is None:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        flat = {
            k: float(v) for k, v in flatten(metrics).items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
        batch = [Metric(metric_name(k), v, now_ms, step or 0) for k, v in flat.items()]
        what = f"metrics at step {step}" if step is not None else f"{len(batch)} metrics"
        for i in range(0, len(batch), 1000):
            self._call(what, lambda b=batch[i : i + 1000]: self._client.log_batch(self.run_id, metrics=b))

    def log_curve(self, rows: list[Mapping[str, float]], step_key: str = "epoch") -> None:
        """Log a per-epoch history as metric series in batched calls."""
        for row in rows:
            self.epoch = max(self.epoch, int(row[step_key]))
            self.log_metrics({k: v for k, v in row.items() if k != step_key}, step=int(row[step_key]))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not Path(path).exists():
            return
        if Path(path).is_dir():
            self._call(f"artifacts {path}", lambda: self._client.log_artifacts(self.run_id, str(path), artifact_path))
        else:
            self._call(f"artifact {path}", lambda: self._client.log_artifact(self.run_id, str(path), artifact_path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self._call(f"tag {k}", lambda k=k, v=v: self._client.set_tag(self.run_id, k, v))

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = [Param(k, str(v)[:6000]) for k, v in flatten(params).items()]
        for i in range(0, len(flat), 100):
            self._call("params", lambda b=flat[i : i + 100]: self._client.log_batch(self.run_id, params=b))

    def end(self, status: str) -> None:
        self._call(f"status {status}", lambda: self._client.set_terminated(self.run_id, status))
        if self.missed:
            what = "MLflow run " + self.run_id if self.run_id else f"MLflow run for {self.name} (never created)"
            log.warning("%s is incomplete: not logged: %s", what, ", ".join(dict.fromkeys(self.missed)))


def _short(err: BaseException) -> str:
    """The first line of an MLflow error, without its retry chatter."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    cause = re.search(r"\[Errno [^\]]+\][^'\")]*", text)  # e.g. "[Errno 111] Connection refused"
    if cause:
        return cause.group(0).strip()
    return text if len(text) < 200 else text[:200] + "..."


def _client() -> Any:
    """A client of the current tracking URI; one per URI and process (creating one opens the
    store, which for SQLite checks its schema: a second per run of a 45-run stage adds up)."""
    return _client_for(store_uri(), os.getcwd())  # a relative sqlite:/// path is the folder's


@functools.cache
def _client_for(uri: str, cwd: str) -> Any:
    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from mlflow.tracking import MlflowClient
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # if the user points at ./mlruns
    return MlflowClient(uri)


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (relative to the current folder, or absolute)."""
    if not uri.startswith("sqlite:///"):
        return None
    rest = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return Path(rest) if rest else None


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise across processes what two jobs starting on one SQLite file at once race on: MLflow
    creating its tables ("table runs already exists" killed the second of two `dvc queue` workers)
    and faceattr creating its experiments. A lock file beside the database; other stores (a
    tracking server) serialise these themselves, and where ``fcntl`` is missing nothing is locked."""
    path = _sqlite_file(uri)
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_of(stage: str) -> str:
    """The experiment a stage's runs go to: fine-tuning runs to ``faceattr``, the rest apart."""
    return EXPERIMENT if stage == "finetune_multitask" else STAGES_EXPERIMENT


def _experiment_id(client: Any, name: str = EXPERIMENT) -> str:
    """The experiment ``name``, created as (or marked) a model-training experiment, its artifacts
    beside a SQLite store's database (``artifact_location``)."""
    exp = client.get_experiment_by_name(name)
    tags = dict(EXPERIMENT_KIND)
    view = default_view(name)
    if view is not None:
        tags[f"mlflow.sharedViewState.{VIEW_KEY}"] = view
    if exp is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name, artifact_location(store_uri(), name), tags=tags)
        except MlflowException as err:  # another job created it since (a tracking server shared by jobs)
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in tags.items():
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def _start(stage: str, name: str, tags: Mapping[str, str], experiment: str | None = None) -> Run:
    """Create the run, or raise ``TrackingUnavailable`` with one line a user can act on.

    Once the store has answered in this process, a failure is an outage, not a wrong URI: the run
    is inert (``OUTAGE``) and the stage goes on."""
    uri = store_uri()
    if OUTAGE.down is not None:
        return Run(name=name)
    try:
        with _store_lock(uri):  # two jobs opening a new SQLite store at once race on its tables
            client = _client()
            experiment_id = _experiment_id(client, experiment or experiment_of(stage))
        run = client.create_run(experiment_id, run_name=name, tags=dict(tags))
    except Exception as err:
        if OUTAGE.answered:
            OUTAGE.fail(err)
            return Run(name=name)
        raise TrackingUnavailable(
            f"MLflow tracking store '{uri}' cannot be reached ({_short(err)}): start it, point MLFLOW_TRACKING_URI "
            "at a store that answers, or run without tracking with FACEATTR_TRACKING=off"
        ) from None
    OUTAGE.answered = True
    return Run(client, run.info.run_id)


def _reopen(run_id: str) -> Run | None:
    """The finished run ``run_id`` of this store, or None (another store, deleted, unfinished).
    While the store is down, the run is taken as it was recorded (inert: nothing is logged to a
    reopened run anyway)."""
    if OUTAGE.down is not None:
        return Run(None, run_id, reopened=True)
    try:
        client = _client()
        found = client.get_run(run_id)
    except Exception:
        return None
    not_run = found.info.status == "KILLED" and found.data.tags.get("faceattr.status") == "not run"
    if (found.info.status != "FINISHED" and not not_run) or found.info.lifecycle_stage != "active":
        return None
    OUTAGE.answered = True
    return Run(client, run_id, reopened=True)


@contextmanager
def _on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into ``Interrupted`` so the run can be closed (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        raise Interrupted(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def tracked_run(
    stage: str,
    params: Mapping[str, Any],
    variant: str | None = None,
    tags: Mapping[str, str] | None = None,
    reopen: str | None = None,
) -> Iterator[Run]:
    """Start a run for ``stage`` (and ``variant``), log ``params``; end it FINISHED (or the run's
    ``final_status``: KILLED for a run marked not run), KILLED (SIGTERM, SIGINT: tagged with the
    epoch reached) or FAILED. A fine-tuning run is named by its variant alone (``<variant>-s<seed>``:
    the runs table's name column is narrow); any other run ``<stage>/<variant>``.

    ``tags`` are extra run tags (a fine-tuning run's seed and variant without the seed, so the
    MLflow UI can group a variant's seeds). ``reopen`` is the id of a finished run whose result
    the stage reuses: where the store holds it, that run is yielded (``reopened``), nothing is
    logged to it and its status is left as it is; elsewhere a new run is started.
    """
    if not enabled():
        yield Run()
        return
    if reopen:
        with phase("tracking"):
            earlier = _reopen(reopen)
        if earlier is not None:
            log.info("MLflow run %s (%s/%s) reused", reopen, stage, variant or "")
            yield earlier
            return
    commit = git_commit()
    run_tags = {
        "faceattr.stage": stage,
        "faceattr.pipeline": commit,
        "mlflow.source.git.commit": commit.removesuffix("-dirty"),
    }
    if variant:
        run_tags["faceattr.variant"] = variant
    run_tags.update(tags or {})
    name = (variant if stage == "finetune_multitask" else f"{stage}/{variant}") if variant else stage
    with phase("tracking"):
        tracker = _start(stage, name, run_tags)
        tracker.log_params(params)
    log.info("MLflow run %s (%s) in %s", tracker.run_id, name, tracking_uri())
    with _on_sigterm():
        try:
            yield tracker
        except (KeyboardInterrupt, Interrupted) as err:
            reason = "SIGINT" if isinstance(err, KeyboardInterrupt) else "SIGTERM"
            tracker.set_tags({"faceattr.stopped_by": reason, "faceattr.epoch_reached": str(tracker.epoch)})
            tracker.end("KILLED")
            raise
        except BaseException:
            tracker.set_tags({"faceattr.epoch_reached": str(tracker.epoch)})
            tracker.end("FAILED")
            raise
    with phase("tracking"):
        tracker.end(tracker.final_status)


@contextmanager
def times_kept(run: Run) -> Iterator[None]:
    """Log into a finished run (a model, by ``mlflow.start_run(run_id=...)``) without changing its
    status and end time: reopening a run ends it again *now*, so a 50-s training read as 20 min."""
    if not run.active or run.run_id is None:
        yield
        return
    info = run._call("run info", lambda: run._client.get_run(run.run_id).info)
    yield
    if info is not None:
        run._call("status", lambda: run._client.set_terminated(run.run_id, info.status, end_time=info.end_time))


def variant_run(
    variant: str, children: Mapping[str, str], metrics: Mapping[str, float], params: Mapping[str, Any]
) -> Run:
    """The ``faceattr-variants`` run of ``variant``: the mean and std over its seeds of each test
    metric, its seeds' fine-tuning run ids as tags. One run per variant and set of seed runs: an
    evaluate that sees the same runs again logs into the same run instead of adding one."""
    if not enabled() or OUTAGE.down is not None:
        return Run()
    key = f"{variant}:{','.join(sorted(children.values()))}"
    client = _client()
    experiment_id = _experiment_id(client, VARIANTS_EXPERIMENT)
    found = client.search_runs([experiment_id], f"tags.`faceattr.children_key` = '{_quoted(key)}'", max_results=1)
    if found:
        run = Run(client, found[0].info.run_id)
    else:
        tags = {
            "faceattr.stage": "evaluate",
            "faceattr.variant": variant,
            "faceattr.pipeline": git_commit(),
            "faceattr.children_key": key,
            "faceattr.seed_runs": json.dumps(children, sort_keys=True)[:5000],
        }
        run = _start("evaluate", f"{variant} ({len(children)} seeds)", tags, VARIANTS_EXPERIMENT)
        run.log_params({**params, "variant": variant, "seeds": len(children)})
    run.log_metrics(metrics)
    run.end("FINISHED")
    return run


def _quoted(value: str) -> str:
    return value.replace("'", "\\'")


def data_provenance(params_file: str | Path, role: str, store: str | Path) -> dict[str, str]:
    """What a run was trained on, for its MLflow params: the data set and source of ``role``, the
    split protocol, the alignment params and the DVC hash of the aligned store (``dvc.lock``)."""
    from faceattr.config import load_params
    from faceattr.io import parse_yaml

    p = load_params(params_file)
    data, split, align = p.get("datasets", {}).get(role, {}), p.get("split", {}), p.get("align", {})
    out = {
        "data.role": role,
        "data.dataset": str(data.get("dataset", "")),
        "data.source": str(data.get("source", "")),
        "data.uri": str(data.get("uri", "")),
        "data.max_images": str(data.get("max_images", "")),
        "data.split_protocol": str(split.get("protocol", "")),
        "data.split_file": str(split.get("file", "")),
        **{f"data.align.{k}": str(align.get(k, "")) for k in ("size", "scale", "fill", "landmarks")},
        "data.store": str(store),
        "data.store_dvc_md5": "not in dvc.lock",
    }
    lock = Path("dvc.lock")
    if lock.is_file():
        stages = (parse_yaml(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for o in stage.get("outs", []):
                if Path(o.get("path", "")) == Path(store) and "md5" in o:
                    out["data.store_dvc_md5"] = o["md5"]
    return out


def write_run_link(tracker: Run, path: str | Path) -> None:
    """Record which MLflow run observed this output (``None`` ids when tracking was off)."""
    from faceattr.io import write_json

    on = tracker.run_id is not None
    write_json({"mlflow_run_id": tracker.run_id, "tracking_uri": tracking_uri() if on else None}, path)


def linked_run(link: str | Path, name: str, restore: Callable[[Run], None]) -> Run:
    """The MLflow run a DVC output names in its ``mlflow_run.json``, for more logging (evaluate's
    test metrics). Where that run is not in this store (the output came from DVC's run cache,
    another store, or a run with tracking off), a run is created for it, tagged
    ``faceattr.restored``, and ``restore`` fills in what the original run held."""
    if not enabled():
        return Run()
    link = Path(link)
    recorded = json.loads(link.read_text()).get("mlflow_run_id") if link.is_file() else None
    if OUTAGE.down is not None:
        return Run(None, recorded, name=name)
    client = _client()
    if recorded:
        try:
            client.get_run(recorded)
            OUTAGE.answered = True
            return Run(client, recorded)
        except Exception:
            pass
    tags = {
        "faceattr.stage": "finetune_multitask",
        "faceattr.variant": name,
        "faceattr.pipeline": git_commit(),
        "faceattr.restored": "true",
        "faceattr.restored_from": recorded or "no run id (tracked off, or written before run links)",
    }
    run = _start("finetune_multitask", name, tags)
    if not run.active:  # the store stopped answering: nothing to restore into
        return run
    restore(run)
    run.end("FINISHED")
    log.info("MLflow: recreated run %s for %s (its outputs came from DVC's cache)", run.run_id, name)
    return run
