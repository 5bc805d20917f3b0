import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from initlab import plotting  # noqa: E402


def test_layer_stats_marks_zero_inf_and_nan_layers():
    ax = plotting.plot_layer_stats(
        {"fine": [1.0, 0.5, 0.25], "broken": [1.0, 0.0, np.inf]}, "variance"
    )
    assert len(ax.get_lines()) == 2
    assert [t.get_text() for t in ax.texts] == ["broken: 2 layers 0, inf or nan"]
    assert ax.get_yscale() == "log"


def test_contours_and_distance_views():
    f = lambda x: float(x @ x)  # noqa: E731
    path = np.array([[1.0, 1.0], [0.5, 0.5], [0.25, 0.25]])
    ax = plotting.plot_contours(f, {"gd": path}, xlim=(-1, 1), ylim=(-1, 1), resolution=11)
    assert ax.get_legend() is not None
    ax = plotting.plot_distance({"gd": path}, [0.0, 0.0])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), np.linalg.norm(path, axis=1))
