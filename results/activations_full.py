"""Regenerate results/activations-full.json: the activations notebook's numbers at an
experiment budget (by default ``full``, the course protocol: 1,000 epochs per network).

    PYTHONPATH=lib:autograder .venv/bin/python results/activations_full.py [--budget full]
        [--output results/activations-full.json] [--threads 2]

Executes source/activations/activations.ipynb with its reference answers, without its
instructor-only cells (they check the notebook's text against this file), in a fresh kernel
and a temporary directory, then reads the trained results from the kernel and writes them as
JSON (accuracies rounded to 4 decimals, as the notebook prints them). Trained networks are
cached in the initlab data directory (``INITLAB_DATA``, default ``~/.cache/initlab``), so
an interrupted run resumes where it stopped. The full budget trains 92,750 network-epochs:
about two hours on two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "source" / "activations" / "activations.ipynb"
COMMAND = "PYTHONPATH=lib:autograder .venv/bin/python results/activations_full.py --budget {budget}"

# Appended to the notebook: print the numbers the notebook computed as one JSON line.
DUMP = r"""
import json as _json
_r4 = lambda v: round(float(v), 4)
_out = {
    "budget": budget.current(),
    "num_epochs": {
        "part5": num_epochs, "part6": search_epochs, "part7": final_epochs, "part8": final_epochs
    },
    "batch_size": batch_size,
    "part5_lr": 0.005,
    "part5_val_acc": {r.config.activation: _r4(r.history["val_acc"][-1]) for r in runs},
    "part6_best_lr": {name: _r4(best_lr[name]) for name in names},
    "part6_best_val_acc": {
        name: _r4(max(r.history["val_acc"][-1] for r in search if r.config.activation == name))
        for name in names
    },
    "part7_seeds": list(seeds),
    "part7_test_acc": {
        name: {"lr": _r4(best_lr[name]), "mean": _r4(np.mean(test_acc[name])),
               "std": _r4(np.std(test_acc[name], ddof=1)) if len(test_acc[name]) > 1 else None,
               "min": _r4(np.min(test_acc[name])), "max": _r4(np.max(test_acc[name]))}
        for name in names
    },
    "part8": {"lr": _r4(learned.config.lr), "beta": [_r4(beta1), _r4(beta2)],
              "test_acc": _r4(engine.evaluate(learned, X_test, y_test)["acc"])},
}
print("RESULTS " + _json.dumps(_out))
"""


def run(budget: str, threads: int) -> dict:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells = [c for c in nb.cells if "instructor-only" not in c.metadata.get("tags", [])]
    nb.cells.append(nbformat.v4.new_code_cell(DUMP))
    env = {
        "INITLAB_BUDGET": budget,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join([str(REPO / "lib"), str(REPO / "autograder")]),
    }
    os.environ.update(env)
    os.environ.pop("CI", None)
    with tempfile.TemporaryDirectory() as cwd:
        client = NotebookClient(
            nb, timeout=None, kernel_name="python3", resources={"metadata": {"path": cwd}}
        )
        client.execute()
    outputs = nb.cells[-1].outputs
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    (line,) = [x for x in text.splitlines() if x.startswith("RESULTS ")]
    return json.loads(line[len("RESULTS ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=REPO / "results" / "activations-full.json")
    args = parser.parse_args()
    start = time.monotonic()
    results = run(args.budget, args.threads)
    seconds = time.monotonic() - start
    record = {
        "what": "numbers printed by source/activations/activations.ipynb (reference answers) "
        f"at the {args.budget!r} experiment budget; its instructor-only cells check the "
        "notebook's text against them",
        "command": COMMAND.format(budget=args.budget),
        "measured": f"{seconds:,.0f} s end to end on {args.threads} threads",
        **results,
    }
    args.output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
