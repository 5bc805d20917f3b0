"""Sample submissions for assignment 3b (activation functions, deep dive)."""

from initlab_grading.course.samples import Sample

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
        lost={"test_best_lr": "that is a validation accuracy of your search, not a learning rate"},
    ),
    Sample(
        "best-lr-index",
        "best_lr holds the position of each activation's best rate in lrs (np.argmax) instead "
        "of the rate",
        answers={
            "best_lr": "best_lr = {}\nfor name in names:\n"
            "    mine = [r for r in search if r.config.activation == name]\n"
            "    finals = [r.history['val_acc'][-1] for r in mine]\n"
            "    best_lr[name] = int(np.argmax(finals))",
        },
        lost={"test_best_lr": "the position of the best rate in lrs, not the rate"},
    ),
    Sample(
        "best-lr-one-for-all",
        "one rate for every activation: the rate of the best network over the whole search",
        answers={
            "best_lr": "top = max(search, key=lambda r: r.history['val_acc'][-1])\n"
            "best_lr = {name: top.config.lr for name in names}",
        },
        lost={"test_best_lr": "the rate of the best network over the whole search"},
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
        "summary-variance",
        "the table's spread over seeds is the sample variance instead of the standard deviation",
        answers={
            "summary": "def summarize(test_acc):\n    table = {}\n"
            "    for name, accs in test_acc.items():\n"
            "        a = np.asarray(accs)\n"
            "        spread = a.var(ddof=1) if len(a) > 1 else np.nan\n"
            "        table[name] = {'mean': a.mean(), 'std': spread, 'min': a.min(), "
            "'max': a.max()}\n"
            "    return table",
        },
        lost={"test_summary": "std is the variance"},
    ),
    Sample(
        "summary-standard-error",
        "the table's spread over seeds is the standard error of the mean, std / sqrt(n)",
        answers={
            "summary": "def summarize(test_acc):\n    table = {}\n"
            "    for name, accs in test_acc.items():\n"
            "        a = np.asarray(accs)\n"
            "        sem = a.std(ddof=1) / np.sqrt(len(a)) if len(a) > 1 else np.nan\n"
            "        table[name] = {'mean': a.mean(), 'std': sem, 'min': a.min(), "
            "'max': a.max()}\n"
            "    return table",
        },
        lost={"test_summary": "standard error of the mean"},
    ),
    Sample(
        "summary-stdev-one-seed",
        "the table with statistics.stdev, which raises for a single seed instead of giving nan",
        answers={
            "summary": "import statistics\n\n\ndef summarize(test_acc):\n"
            "    return {name: {'mean': statistics.mean(a), 'std': statistics.stdev(a),\n"
            "                   'min': min(a), 'max': max(a)} for name, a in test_acc.items()}",
        },
        lost={"test_summary": "with a single seed the sample standard deviation is undefined"},
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
    Sample(
        "betas-rounded",
        "the learned betas rounded to two decimals for a tidy printout",
        answers={"betas": "betas = [round(float(b), 2) for b in learned.params['beta']]"},
        lost={"test_betas": "rounded to 2 decimals"},
    ),
]
