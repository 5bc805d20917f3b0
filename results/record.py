"""Record what a notebook computes at an experiment budget (by default ``full``, the protocol
the notebook reproduces), as JSON under results/, for the notebook's instructor checks.

    PYTHONPATH=lib:autograder .venv/bin/python results/record.py activations [--budget full]
    PYTHONPATH=lib:autograder .venv/bin/python results/record.py kurtosis [--budget full]
        [--output results/<assignment>-full.json] [--threads 2]

Executes source/<assignment>/<assignment>.ipynb and its deep dive,
source/<assignment>_deep_dive/, with their reference answers, without its instructor-only cells
(they check the notebook's text against the file this writes), in a fresh kernel and a
temporary folder, then reads the results from the kernel and writes them as JSON (accuracies
rounded to 4 decimals, as the notebooks print them). Trained networks are cached in the
initlab data folder (``INITLAB_DATA``, default ``~/.cache/initlab``), so an interrupted run
resumes where it stopped.

``activations`` at ``full`` is seed 003's protocol, 1,000 epochs per network (92,750
network-epochs, about two hours on two CPU cores; Part 5 is Assignment 3's, Parts 6 to 8 its deep
dive's): the accuracies of Parts 5 to 8 and the
training curves (at about 60 epochs spaced evenly on a log scale), which it also draws as
results/activations-full-curves.png. ``kurtosis`` at ``full`` is the deep dive's Figures 1 to
3 (600 + 275 trained networks, Figure 2 over 10,000 networks and the 60,000 training images)
and Part 4's 10^7 draws.
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
COMMAND = (
    "PYTHONPATH=lib:autograder .venv/bin/python results/record.py {assignment} --budget {budget}"
)

# Appended to each notebook: print what the notebook computed as one JSON line.
_HELPERS = r"""
import json as _json
_r4 = lambda v: round(float(v), 4)
_g3 = lambda v: float(f"{float(v):.3g}")
"""

# Curves at about 60 epochs spaced evenly on a log scale.
_CURVES = r"""
_ep = lambda n: sorted({int(e) for e in np.round(np.logspace(0, np.log10(n), 60))})
_curve = lambda values: [_r4(values[e - 1]) for e in _ep(len(values))]
"""

# Assignment 3: Part 5 of the seed-003 protocol (six activations at lr 0.005), with its curves.
ACTIVATIONS_PART5 = (
    _HELPERS
    + _CURVES
    + r"""
_out = {
    "budget": budget.current(),
    "num_epochs": {"part5": num_epochs},
    "batch_size": batch_size,
    "part5_lr": 0.005,
    "part5_val_acc": {r.config.activation: _r4(r.history["val_acc"][-1]) for r in runs},
    "curves": {
        "epochs": {"part5": _ep(num_epochs)},
        "part5": {r.config.activation: {k: _curve(r.history[k])
                                        for k in ("train_loss", "val_loss", "val_acc")}
                  for r in runs},
    },
}
print("RESULTS " + _json.dumps(_out))
"""
)

# Assignment 3b, Part 3 (the protocol's Part 7): retraining with the best rates, and its curves.
_PART7 = r"""
_part7 = {
    "part7_test_acc": {
        name: {"lr": _r4(best_lr[name]), "mean": _r4(np.mean(test_acc[name])),
               "std": _r4(np.std(test_acc[name], ddof=1)) if len(test_acc[name]) > 1 else None,
               "min": _r4(np.min(test_acc[name])), "max": _r4(np.max(test_acc[name]))}
        for name in names
    },
    "part7_curves": {name: {str(r.config.seed): _curve(r.history["train_loss"])
                            for r in final if r.config.activation == name}
                     for name in names},
}
"""

# Assignment 3b: the protocol's Parts 6 to 8.
ACTIVATIONS_DEEP = (
    _HELPERS
    + _CURVES
    + _PART7
    + r"""
_best = {name: max((r for r in search if r.config.activation == name),
                   key=lambda r: r.history["val_acc"][-1])
         for name in names}
_out = {
    "budget": budget.current(),
    "num_epochs": {"part6": search_epochs, "part7": final_epochs, "part8": final_epochs},
    "part6_best_lr": {name: _r4(best_lr[name]) for name in names},
    "part6_best_val_acc": {name: _r4(_best[name].history["val_acc"][-1]) for name in names},
    "part7_seeds": list(seeds),
    "part7_test_acc": _part7["part7_test_acc"],
    "part8": {"lr": _r4(learned.config.lr), "beta": [_r4(b) for b in learned.params["beta"]],
              "test_acc": _r4(engine.evaluate(learned, X_test, y_test)["acc"])},
    "curves": {
        "epochs": {"part6": _ep(search_epochs), "part7": _ep(final_epochs)},
        "part6_best": {name: {k: _curve(_best[name].history[k]) for k in ("train_loss", "val_acc")}
                       for name in names},
        "part7_train_loss": _part7["part7_curves"],
    },
}
print("RESULTS " + _json.dumps(_out))
"""
)

# --curves-from: the protocol's Part 7 only, Part 6's best rates taken from the recorded file.
ACTIVATIONS_DEEP_CURVES = (
    _HELPERS
    + _CURVES
    + _PART7
    + r"""
_out = {
    "budget": budget.current(),
    "part7_test_acc": _part7["part7_test_acc"],
    "curves": {"epochs": {"part7": _ep(final_epochs)}, "part7_train_loss": _part7["part7_curves"]},
}
print("RESULTS " + _json.dumps(_out))
"""
)

KURTOSIS_PART4 = (
    _HELPERS
    + r"""
_out = {
    "budget": budget.current(),
    "part4": {"num_draws": int(num_draws), "kappa0": _r4(kappa0), "c0": _r4(c0),
              "se": [_r4(se[0]), _r4(se[1])]},
}
print("RESULTS " + _json.dumps(_out))
"""
)

# The deep dive (Assignment 5b): the paper's Figures 1 to 3.
KURTOSIS_FIGURES = (
    _HELPERS
    + r"""
_out = {
    "budget": budget.current(),
    "figure1": {
        "widths": list(fig1_widths), "depths": list(fig1_depths), "repeats": fig1_repeats,
        "steps": fig1_steps, "batch_size": 90, "lr": 1e-4,
        "columns": ["width", "depth", "distribution", "repetition", "predicted_kurtosis",
                    "test_acc"],
        "rows": [[a, b, c, d, _g3(k), _r4(acc)] for a, b, c, d, k, acc in fig1],
        "spearman": _r4(stats.spearmanr(fig1_kurtosis, fig1_acc)[0]),
    },
    "figure2": {
        "num_nets": num_nets, "num_images": num_images, "width": 10,
        "depth": int(next(iter(table.values())).shape[1]),
        "quantile_levels": list(quantile_levels),
        "quantiles": {label: [[_g3(v) for v in row] for row in values.tolist()]
                      for label, values in table.items()},
        "all_zero": {label: bool((v == 0).all()) for label, v in variances.items()},
    },
    "figure3": {
        "depths": list(depths), "repeats": num_repeats, "steps": num_steps,
        "batch_size": batch_size, "lr": 1e-4, "width": w,
        "test_acc": {name: [[_r4(a) for a in row] for row in rows]
                     for name, rows in test_acc.items()},
    },
}
print("RESULTS " + _json.dumps(_out))
"""
)

DUMPS = {
    "activations": [
        ("activations", ACTIVATIONS_PART5),
        ("activations_deep_dive", ACTIVATIONS_DEEP),
    ],
    "kurtosis": [("kurtosis", KURTOSIS_PART4), ("kurtosis_deep_dive", KURTOSIS_FIGURES)],
}
"""Per record, the notebooks it executes and what each prints; their results are merged."""


def run(record: str, budget: str, threads: int, best_lr: dict | None = None) -> dict:
    """Execute the record's source notebooks at ``budget`` and return what they computed.

    With ``best_lr`` (activations only), the deep dive's learning-rate search is not run: its
    best rate per activation is taken from ``best_lr`` (values rounded as recorded), and the
    deep dive stops after the retraining."""
    results: dict = {}
    for assignment, dump in DUMPS[record]:
        searched = best_lr if assignment == "activations_deep_dive" else None
        if searched is not None:
            dump = ACTIVATIONS_DEEP_CURVES
        _merge(results, _execute(assignment, dump, budget, threads, searched))
    return results


def _merge(into: dict, new: dict) -> None:
    """Add ``new`` to ``into``, merging the dicts both hold (``curves``, ``num_epochs``)."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def _execute(
    assignment: str, dump: str, budget: str, threads: int, best_lr: dict | None = None
) -> dict:
    """Execute source/<assignment>/<assignment>.ipynb at ``budget`` with ``dump`` appended,
    and return the JSON it prints. With ``best_lr``, the notebook's learning-rate search is
    replaced by those rates and the notebook stops after the retraining."""
    notebook = REPO / "source" / assignment / f"{assignment}.ipynb"
    nb = nbformat.read(notebook, as_version=4)
    nb.cells = [c for c in nb.cells if "instructor-only" not in c.metadata.get("tags", [])]
    if best_lr is not None:
        (search,) = [i for i, c in enumerate(nb.cells) if "search = engine.train(" in c.source]
        (final,) = [i for i, c in enumerate(nb.cells) if "final = engine.train(" in c.source]
        nb.cells[search].source = (
            "lrs = np.logspace(-3, 0, 8)\n"
            f"_recorded = {json.dumps(best_lr)}\n"
            "best_lr = {name: float(lrs[np.argmin(abs(lrs - v))]) for name, v in _recorded.items()}"
        )
        # the cells between them that read the search (the choice of best_lr and its test)
        between = [
            i
            for i in range(search + 1, final)
            if nb.cells[i].cell_type == "code" and "search" in nb.cells[i].source
        ]
        nb.cells = [c for i, c in enumerate(nb.cells[: final + 1]) if i not in between]
    nb.cells.append(nbformat.v4.new_code_cell(dump))
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


def draw_activation_curves(record: dict, path: Path) -> None:
    """Draw the recorded training curves: Part 5's validation accuracy and training loss per
    activation, and the training loss of Part 7's runs (one line per seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = record["curves"]
    epochs = curves["epochs"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, history in curves["part5"].items():
        (line,) = axes[0].plot(epochs["part5"], history["val_acc"], label=name)
        axes[1].plot(epochs["part5"], history["train_loss"], color=line.get_color(), label=name)
        for i, values in enumerate(curves["part7_train_loss"][name].values()):
            label = name if i == 0 else None
            axes[2].plot(epochs["part7"], values, color=line.get_color(), alpha=0.6, label=label)
    n = record["num_epochs"]["part5"]
    axes[0].set(title=f"Part 5: validation accuracy, lr 0.005, {n} epochs", ylabel="accuracy")
    axes[1].set(title="Part 5: training loss", ylabel="cross-entropy", yscale="log")
    axes[2].set(
        title=f"Part 7: training loss at the best lr, seeds {record['part7_seeds']}",
        ylabel="cross-entropy",
        yscale="log",
    )
    for ax in axes:
        ax.set(xscale="log", xlabel="epoch")
        ax.legend(fontsize="small")
    fig.suptitle(f"Activations at the {record['budget']!r} budget (batch {record['batch_size']})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def add_curves(record_path: Path, budget: str, threads: int) -> dict:
    """Retrain the protocol's Parts 5 and 7 (Assignment 3's six activations and the deep
    dive's retraining, with the search's best rates from the record), check that their
    accuracies reproduce the record's, and add their curves."""
    record = json.loads(record_path.read_text())
    start = time.monotonic()
    results = run("activations", budget, threads, best_lr=record["part6_best_lr"])
    seconds = time.monotonic() - start
    for key in ("budget", "part5_val_acc", "part7_test_acc"):
        if results[key] != record[key]:
            raise SystemExit(
                f"{key} does not reproduce {record_path}: {results[key]} against {record[key]}. "
                "Regenerate the whole record (without --curves-from)."
            )
    record["curves"] = results["curves"]
    record["curves_measured"] = (
        f"Parts 5 and 7 retrained in {seconds:,.0f} s on {threads} threads; their accuracies "
        "reproduce this file's to the last recorded digit"
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("assignment", choices=sorted(DUMPS))
    parser.add_argument("--budget", default="full")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument(
        "--curves-from",
        type=Path,
        default=None,
        help="activations: add Parts 5 and 7's curves to this record, retraining only them",
    )
    args = parser.parse_args()
    output = args.output or REPO / "results" / f"{args.assignment}-{args.budget}.json"
    if args.curves_from is not None:
        if args.assignment != "activations":
            parser.error("--curves-from applies to the activations notebook only")
        record = add_curves(args.curves_from, args.budget, args.threads)
    else:
        start = time.monotonic()
        results = run(args.assignment, args.budget, args.threads)
        notebooks = DUMPS[args.assignment]
        seconds = time.monotonic() - start
        record = {
            "what": f"what {' and '.join(f'source/{a}/{a}.ipynb' for a, _ in notebooks)}"
            f" (reference answers) compute at the {args.budget!r} experiment budget; their "
            "instructor-only cells check the notebooks' text against this file",
            "command": COMMAND.format(assignment=args.assignment, budget=args.budget),
            "measured": f"{seconds:,.0f} s end to end on {args.threads} threads"
            " (less where trained networks came from the cache)",
            **results,
        }
    output.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {output}", file=sys.stderr)
    if args.assignment == "activations":
        figure = output.with_name(output.stem + "-curves.png")
        draw_activation_curves(record, figure)
        print(f"wrote {figure}", file=sys.stderr)


if __name__ == "__main__":
    main()
