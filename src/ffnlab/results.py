"""The result artifact every experiment and analysis writes, and the report reads.

A `Result` holds everything a report section shows: the claim, the method, the
pre-registered criterion, the computed verdict, numbers with confidence intervals, tables,
plottable series, the published anchors beside ours, caveats, and the command that
regenerates it. Results are JSON files written atomically; reports never recompute.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ffnlab.errors import FFNLabError

VERDICTS = ("supported", "partly supported", "not supported")
INCONCLUSIVE = "inconclusive (under-trained)"  # a model the verdict rests on missed its bar
INDICATIVE = "indicative: "  # prefix of a verdict from fewer than MIN_SEEDS seeds
MIN_SEEDS = 3
ALL_VERDICTS = (*VERDICTS, INCONCLUSIVE)


def base_verdict(verdict: str | None) -> str | None:
    """The verdict without its 'indicative: ' label."""
    return verdict[len(INDICATIVE):] if verdict and verdict.startswith(INDICATIVE) else verdict


def is_indicative(verdict: str | None) -> bool:
    return bool(verdict) and verdict.startswith(INDICATIVE)


@dataclass
class Estimate:
    """A quantity over seeds: mean and 95% confidence interval (t-distribution)."""

    quantity: str
    mean: float
    ci_low: float
    ci_high: float
    per_seed: list[float] = field(default_factory=list)
    unit: str = ""


@dataclass
class Criterion:
    """Fixed in the experiment's code before it runs: `quantity direction threshold`."""

    quantity: str
    direction: str  # ">" or "<"
    threshold: float
    rule: str  # how the seeds decide, in words


@dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[Any]]
    note: str = ""


@dataclass
class Line:
    label: str
    x: list[float]
    y: list[float]
    err: list[float] | None = None  # half-width of the 95% CI per point


@dataclass
class Series:
    """A figure: lines (or bars/points) with labelled axes and units."""

    title: str
    x_label: str
    y_label: str
    lines: list[Line]
    kind: str = "line"  # line | bar | scatter | heatmap (one row per line, colour = y)
    log_x: bool = False
    log_y: bool = False
    note: str = ""


@dataclass
class Anchor:
    """A published number beside ours."""

    source: str
    published: str
    ours: str


@dataclass(frozen=True)
class Deviation:
    """A criterion or protocol changed after results were seen, logged as such (shown in the report)."""

    version: int  # the experiment version that introduced the change
    changed: str  # what was changed, from what to what
    seen: str  # which results had been seen when it was changed
    why: str


@dataclass
class Result:
    name: str
    claim: str  # "C1".."C8"
    title: str
    version: int
    mode: str  # quick | full
    method: str
    criterion: Criterion | None = None
    verdict: str | None = None
    reason: str = ""
    estimates: list[Estimate] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    anchors: list[Anchor] = field(default_factory=list)
    caveats: list[str] = field(default_factory=list)
    deviations: list[Deviation] = field(default_factory=list)  # from the experiment's registration
    extra: dict[str, Any] = field(default_factory=dict)  # free-form (e.g. neuron examples)
    command: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    code_version: str = ""
    code_fingerprint: str = ""  # of the experiment's module and everything it imports (ffnlab.fingerprint)
    training: list[dict[str, Any]] = field(default_factory=list)  # every trained model vs its bar (Quality)
    started: str = ""
    wall_seconds: float = 0.0

    def __post_init__(self) -> None:
        assert self.verdict is None or base_verdict(self.verdict) in ALL_VERDICTS, self.verdict

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        d = dict(d)
        d["criterion"] = Criterion(**d["criterion"]) if d.get("criterion") else None
        d["estimates"] = [Estimate(**e) for e in d.get("estimates", [])]
        d["tables"] = [Table(**t) for t in d.get("tables", [])]
        d["series"] = [Series(**{**s, "lines": [Line(**ln) for ln in s["lines"]]}) for s in d.get("series", [])]
        d["anchors"] = [Anchor(**a) for a in d.get("anchors", [])]
        d["deviations"] = [Deviation(**x) for x in d.get("deviations", [])]
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, default=_json_default))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Result:
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError, TypeError, KeyError, AttributeError, AssertionError) as err:  # ValueError: JSON
            raise FFNLabError(f"stored result {str(path)!r} is damaged ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''}); delete it or run again with "
                              "--rerun") from None


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file in the same directory, then rename: never a half file."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def previous_dir(out: Path) -> Path:
    """Where `atomic_dir` keeps the previous `out` between its two renames."""
    return out.parent / f".{out.name}.old"


@contextmanager
def atomic_dir(out: str | Path) -> Iterator[Path]:
    """Fill the yielded temporary directory beside `out`; on success it is renamed into place, so a kill leaves
    the old whole set (at `out`, or at `previous_dir(out)` between the two renames) or the new one, never a mix."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    old = previous_dir(out)
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp makes it private; results are ordinary directories
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            out.rename(old)
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed write
        shutil.rmtree(stale, ignore_errors=True)


def code_version() -> str:
    """The git commit of the code (with '+dirty' for uncommitted changes), or the package version."""
    from ffnlab import __version__

    root = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{__version__}+{sha}{'.dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        return __version__


def results_dir(path: str | Path | None = None) -> Path:
    """Where results live: `path`, else $FFNLAB_RESULTS, else ./results."""
    root = Path(path or os.environ.get("FFNLAB_RESULTS", "results"))
    if root.exists() and not root.is_dir():
        raise FFNLabError(f"the results directory {str(root)!r} is a file; give a directory")
    return root
