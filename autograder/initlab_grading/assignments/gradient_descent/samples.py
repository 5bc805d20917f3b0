"""Sample submissions for assignment 1 (gradient descent)."""

from initlab_grading.course.samples import Sample

_REFERENCE_GD_HEAD = """def gradient_descent(x0, func, grad, max_steps, lr, tol=1e-3):
    x = np.array(x0, dtype=float)
    trajectory = [x.copy()]
    value = func(x)
"""

SAMPLES = [
    Sample("reference", "the reference answers: full marks on every test cell"),
    Sample("blank", "the release as handed out: zero on every test cell", blank=True),
    Sample(
        "float32-vectorised",
        "correct answers written another way: float32 arithmetic, a vectorised gradient, "
        "a while loop, a list trajectory; must score full marks",
        answers={
            "f_and_grad": """
def f(x):
    x = np.asarray(x, dtype=np.float32)
    return float(np.float32(x[0] - 6) ** 2 + x[1] * x[1] - x[0] * x[1])


def grad_f(x):
    x = np.asarray(x, dtype=np.float32)
    A = np.array([[2, -1], [-1, 2]], dtype=np.float32)
    return A @ x - np.array([12, 0], dtype=np.float32)
""",
            "optimizer": """
def gradient_descent(x0, func, grad, max_steps, lr, tol=1e-3):
    points = [np.asarray(x0, dtype=np.float32)]
    t = 0
    while t < max_steps:
        t += 1
        step = np.float32(lr) / np.sqrt(np.float32(t))
        points.append(points[-1] - step * np.asarray(grad(points[-1]), dtype=np.float32))
        if func(points[-2]) - func(points[-1]) < tol:
            break
    return points
""",
            "stable_step": "largest_stable_step = 2 / 3",
        },
    ),
    Sample(
        "gradient-sign",
        "the gradient with the wrong sign (ascent direction)",
        answers={
            "f_and_grad": """
def f(x):
    x1, x2 = x
    return (x1 - 6) ** 2 + x2**2 - x1 * x2


def grad_f(x):
    x1, x2 = x
    return -np.array([2 * (x1 - 6) - x2, 2 * x2 - x1])
""",
        },
        lost={
            "test_f_and_grad_visible": "The gradient has the wrong sign: it points downhill",
            "test_f_and_grad_hidden": "wrong sign",
        },
    ),
    Sample(
        "hand-constant-step",
        "hand iterations that keep step size 1/2 for all three steps",
        answers={
            "hand_iterates": "hand_iterates = np.array([[6, 6], [9, 3], [7.5, 4.5], [8.25, 3.75]])",
        },
        lost={"test_hand_iterates": "Step 2 used step size 1/2; expected 1/3"},
    ),
    Sample(
        "hessian-halved",
        "the Hessian without the factor 2 of the squares' second derivatives",
        answers={
            "minimum": "x_star = np.array([8.0, 4.0])\n"
            "hessian = np.array([[1.0, -0.5], [-0.5, 1.0]])",
            "stable_step": "largest_stable_step = 2 / 3",
        },
        lost={"test_minimum": "half the true Hessian"},
    ),
    Sample(
        "schedule-one-over-t",
        "step size lr / t instead of lr / sqrt(t)",
        answers={
            "optimizer": _REFERENCE_GD_HEAD
            + """    for t in range(1, max_steps + 1):
        x = x - lr / t * np.asarray(grad(x))
        trajectory.append(x.copy())
        new_value = func(x)
        if value - new_value < tol:
            break
        value = new_value
    return np.array(trajectory)
""",
        },
        lost={
            "test_step_schedule": "The steps follow lr / t",
            "test_trajectories": "The steps follow lr / t",
        },
    ),
    Sample(
        "deleted-failing-tests",
        "the lr / t schedule with the two test cells that catch it deleted: nbgrader puts "
        "them back, so it loses exactly what schedule-one-over-t loses",
        answers={
            "optimizer": _REFERENCE_GD_HEAD
            + """    for t in range(1, max_steps + 1):
        x = x - lr / t * np.asarray(grad(x))
        trajectory.append(x.copy())
        new_value = func(x)
        if value - new_value < tol:
            break
        value = new_value
    return np.array(trajectory)
""",
        },
        deleted=("test_step_schedule", "test_trajectories"),
        lost={
            "test_step_schedule": "The steps follow lr / t",
            "test_trajectories": "The steps follow lr / t",
        },
    ),
    Sample(
        "stop-drops-last-step",
        "the stopping rule tested before the step is kept, so the last point is dropped",
        answers={
            "optimizer": _REFERENCE_GD_HEAD
            + """    for t in range(1, max_steps + 1):
        candidate = x - lr / np.sqrt(t) * np.asarray(grad(x))
        new_value = func(candidate)
        if value - new_value < tol:
            break
        x, value = candidate, new_value
        trajectory.append(x.copy())
    return np.array(trajectory)
""",
        },
        lost={
            "test_stopping_rule": "keep that next point too",
            "test_trajectories": "stopped one point early",
        },
    ),
    Sample(
        "abs-decrease",
        "the stopping rule on the absolute change |f(x_(t-1)) - f(x_t)| < tol, which goes on "
        "after a step that makes f rise",
        answers={
            "optimizer": _REFERENCE_GD_HEAD
            + """    for t in range(1, max_steps + 1):
        x = x - lr / np.sqrt(t) * np.asarray(grad(x))
        trajectory.append(x.copy())
        new_value = func(x)
        if abs(value - new_value) < tol:
            break
        value = new_value
    return np.array(trajectory)
""",
        },
        lost={"test_stopping_rule": "not its absolute value"},
    ),
    Sample(
        "finite-difference-gradient",
        "grad_f as a centred difference of f with h = 1, exact for a quadratic at integer "
        "points (so the visible tests pass) but not the derived formula",
        answers={
            "f_and_grad": """
def f(x):
    x1, x2 = x
    return (x1 - 6) ** 2 + x2**2 - x1 * x2


def grad_f(x):
    x = np.asarray(x, dtype=float)
    grad = np.zeros(2)
    for i in range(2):
        step = np.zeros(2)
        step[i] = 1.0
        grad[i] = (f(x + step) - f(x - step)) / 2
    return grad
""",
        },
        lost={"test_f_and_grad_hidden": "not the gradient derived by hand"},
    ),
    Sample(
        "final-point-only",
        "the optimiser returns only the final point, as the R function does",
        answers={
            "optimizer": _REFERENCE_GD_HEAD
            + """    for t in range(1, max_steps + 1):
        x = x - lr / np.sqrt(t) * np.asarray(grad(x))
        new_value = func(x)
        if value - new_value < tol:
            break
        value = new_value
    return x
""",
        },
        lost={
            "test_optimizer_visible": "has shape (3,): that is one point, not the trajectory",
            "test_step_schedule": "expected (any, 2): that is one point, not the trajectory",
            "test_stopping_rule": "expected (any, 2): that is one point, not the trajectory",
            "test_trajectories": "expected (any, 2): that is one point, not the trajectory",
        },
    ),
    Sample(
        "global-function",
        "the optimiser uses the notebook's f and grad_f instead of the functions passed in",
        answers={
            "optimizer": """def gradient_descent(x0, func, grad, max_steps, lr, tol=1e-3):
    x = np.array(x0, dtype=float)
    trajectory = [x.copy()]
    value = f(x)
    for t in range(1, max_steps + 1):
        x = x - lr / np.sqrt(t) * grad_f(x)
        trajectory.append(x.copy())
        new_value = f(x)
        if value - new_value < tol:
            break
        value = new_value
    return np.array(trajectory)
""",
        },
        lost={
            "test_optimizer_visible": "not f and grad_f",
            "test_step_schedule": "not f and grad_f",
            "test_stopping_rule": "not f and grad_f",
            "test_trajectories": "not f and grad_f",
        },
    ),
    Sample(
        "stable-step-one-over-lambda",
        "the supremum of the converging constant step sizes as 1 / lambda_max instead of "
        "2 / lambda_max",
        answers={"stable_step": "largest_stable_step = 1 / np.linalg.eigvalsh(hessian).max()"},
        lost={"test_stable_step": "That is 1 / lambda_max"},
    ),
    Sample(
        "aliased-trajectory",
        "each step updates x in place and appends x itself: every row of the trajectory is "
        "the last point; the schedule and the stopping rule are read off the points grad "
        "received, so the slip costs the visible optimiser test and test_trajectories only",
        answers={
            "optimizer": """
def gradient_descent(x0, func, grad, max_steps, lr, tol=1e-3):
    x = np.array(x0, dtype=float)
    trajectory = [x]
    value = func(x)
    for t in range(1, max_steps + 1):
        x -= lr / np.sqrt(t) * np.asarray(grad(x))
        trajectory.append(x)
        new_value = func(x)
        if value - new_value < tol:
            break
        value = new_value
    return trajectory
""",
        },
        lost={
            "test_optimizer_visible": "holds one array several times",
            "test_trajectories": "one array changed in place",
        },
    ),
]
