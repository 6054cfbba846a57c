"""`make bench`'s cold start: what a fresh function instance pays before it answers a delivery
it skips (a change of a table it does not watch).

Each round is three fresh interpreters, alternated: one that only starts, one that imports
main.py and answers the delivery through clustering.cloud.handler.respond (timed inside the
child, so interpreter start-up is apart), and one that imports what a run needs (pandas,
scikit-learn, matplotlib): the time a skipped delivery saves by not loading them.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

WATCHED = "city-data.neighborhoods.features"
HEAVY = ("pandas", "sklearn", "matplotlib")

# The delivery, as `python -m clustering send-event` would make it.
_EVENT = """
import json
from clustering.cloud.sender import table_change_event
print(json.dumps(table_change_event("city-data.neighborhoods.other_table")))
"""
# Run in the child, in the code snapshot's folder; the delivery comes on stdin.
_DELIVERY = """
import json, sys, time
started = time.perf_counter()
import main
imported = time.perf_counter()
from clustering.cloud.handler import respond
body = sys.stdin.read().encode()
answer, _ = respond(body, {"Content-Type": "application/cloudevents+json"}, "/", main.SETTINGS)
answered = time.perf_counter()
loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:]))
print(json.dumps({"import_s": imported - started, "delivery_s": answered - imported,
                  "answer": answer["event"], "heavy": loaded}))
"""
_HEAVY = """
import json, time
started = time.perf_counter()
import pandas, sklearn.cluster, matplotlib.pyplot
print(json.dumps({"heavy_s": time.perf_counter() - started}))
"""


@dataclass(frozen=True)
class ColdStart:
    """Medians over the rounds, in seconds; `answer` and `heavy` from the last round."""

    rounds: int
    interpreter_s: float
    import_main_s: float
    skipped_delivery_s: float
    heavy_imports_s: float
    answer: str
    heavy: tuple[str, ...]


def measure(python: str, code: Path, rounds: int = 5) -> ColdStart:
    """Cold starts of main.py as it is in the repository, beside the `code` snapshot's
    clustering/ package, answering a change of another table."""
    shutil.copy(Path(__file__).resolve().parents[1] / "main.py", code / "main.py")
    event = _child(python, ["-c", _EVENT], code, {"PATH": "/usr/bin:/bin"}, "")
    samples: dict[str, list[float]] = {"start": [], "import": [], "delivery": [], "heavy": []}
    found: dict = {}
    with tempfile.TemporaryDirectory(prefix="nc-cold-") as tmp:
        env = {
            "PATH": "/usr/bin:/bin",
            "FEATURES_SOURCE": str(Path(tmp) / "features.csv"),
            "ARTIFACTS_DEST": str(Path(tmp) / "out"),
            "WATCHED_TABLE": WATCHED,
        }
        for _ in range(rounds):
            samples["start"].append(_timed(python, ["-c", "pass"], code, env))
            found = _child(python, ["-c", _DELIVERY, *HEAVY], code, env, json.dumps(event))
            samples["import"].append(found["import_s"])
            samples["delivery"].append(found["delivery_s"])
            samples["heavy"].append(_child(python, ["-c", _HEAVY], code, env, "")["heavy_s"])
    median = {name: statistics.median(values) for name, values in samples.items()}
    return ColdStart(
        rounds,
        median["start"],
        median["import"],
        median["delivery"],
        median["heavy"],
        found["answer"],
        tuple(found["heavy"]),
    )


def _timed(python: str, argv: list[str], cwd: Path, env: dict) -> float:
    import time

    started = time.perf_counter()
    subprocess.run([python, *argv], cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def _child(python: str, argv: list[str], cwd: Path, env: dict, stdin: str) -> dict:
    done = subprocess.run(
        [python, *argv], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"cold start child failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(cold: ColdStart) -> list[str]:
    """The cold start's lines of the bench report."""
    heavy = ", ".join(cold.heavy) or "none"
    return [
        "",
        f"cold start (fresh interpreters, median of {cold.rounds}; bench/cold_start.py):",
        f"  interpreter start alone                    {cold.interpreter_s:6.3f} s",
        f"  import main (settings, handler)            {cold.import_main_s:6.3f} s",
        f"  first skipped delivery (another table)     {cold.skipped_delivery_s:6.3f} s"
        f"   answered {cold.answer}",
        f"  pandas + scikit-learn + matplotlib import  {cold.heavy_imports_s:6.3f} s"
        f"   (what a skip does not pay; loaded by the skip: {heavy})",
    ]
