"""Sample submissions for assignment 3b (activation functions, deep dive)."""

from initlab_grading.samples import Sample

SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "another-way",
        "correct answers written another way: the best rate through numpy's argmax, the table "
        "with the statistics module, the betas with tolist(); must score full marks",
        answers={
            "best_lr": "best_lr = {}\nfor name in names:\n"
            "    mine = [r for r in search if r.config.activation == name]\n"
            "    finals = np.array([r.history['val_acc'][-1] for r in mine])\n"
            "    best_lr[name] = float(mine[int(np.argmax(finals))].config.lr)",
            "summary": """
import statistics


def summarize(test_acc):
    out = {}
    for name in test_acc:
        values = sorted(test_acc[name])
        spread = statistics.stdev(values) if len(values) > 1 else float("nan")
        out[name] = dict(mean=statistics.fmean(values), min=values[0], max=values[-1], std=spread)
    return out
""",
            "betas": "betas = learned.params['beta'].tolist()",
        },
    ),
    Sample(
        "best-lr-min-not-max",
        "the best learning rate chosen with min instead of max: each activation's worst rate",
        answers={
            "best_lr": "best_lr = {}\nfor name in names:\n"
            "    mine = [r for r in search if r.config.activation == name]\n"
            "    best_lr[name] = min(mine, key=lambda r: r.history['val_acc'][-1]).config.lr",
        },
        lost={"test_best_lr": "lowest final validation accuracy"},
    ),
    Sample(
        "best-lr-stores-accuracy",
        "best_lr holds each activation's best validation accuracy instead of its rate",
        answers={
            "best_lr": "best_lr = {name: max(r.history['val_acc'][-1] for r in search\n"
            "                        if r.config.activation == name) for name in names}",
        },
        lost={"test_best_lr": "not one of the searched rates"},
    ),
    Sample(
        "summary-population-std",
        "the table's spread over seeds is the population standard deviation (np.std's default)",
        answers={
            "summary": "def summarize(test_acc):\n"
            "    return {name: {'mean': np.mean(a), 'std': np.std(a), 'min': np.min(a),\n"
            "                   'max': np.max(a)} for name, a in test_acc.items()}",
        },
        lost={"test_summary": "population standard deviation"},
    ),
    Sample(
        "betas-reversed",
        "the learned betas listed output side first",
        answers={"betas": "betas = [float(b) for b in learned.params['beta']][::-1]"},
        lost={"test_betas": "wrong order"},
    ),
    Sample(
        "betas-starting-values",
        "betas set to swish's starting values instead of the learned ones",
        answers={"betas": "betas = [1.0, 1.0]"},
        lost={"test_betas": "starting values"},
    ),
]
