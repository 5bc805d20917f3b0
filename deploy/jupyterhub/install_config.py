"""Install the student configuration into a Python environment's Jupyter configuration
folder, <prefix>/etc/jupyter (prefix: the running interpreter's sys.prefix, or --prefix):

    nbgrader_config.py           -> nbgrader_config.py
        the course, the exchange, Validate judging stderr and time limits as grading does
    jupyter_server_config.json   -> jupyter_server_config.d/zz-initlab-student.json
        nbgrader's formgrader and course-list server extensions off (read after nbgrader's
        own nbgrader.json, which switches them on)
    page_config.json             -> labconfig/page_config.json
        nbgrader's Formgrader, Course List and Create Assignment lab plugins disabled and
        locked (merged into a page_config.json already there)

The single-user image runs it with /usr/local's python, `python3 tasks.py student` with the
student environment's: both environments get the same files in the same places.

    python install_config.py [--prefix DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# file in this folder -> its place under <prefix>/etc/jupyter
FILES = {
    "nbgrader_config.py": "nbgrader_config.py",
    "jupyter_server_config.json": "jupyter_server_config.d/zz-initlab-student.json",
    "page_config.json": "labconfig/page_config.json",
}


def _merged_page_config(ours: dict, there: Path) -> dict:
    """Our page_config.json merged into one already in place (its other keys kept)."""
    if not there.exists():
        return ours
    try:
        merged = json.loads(there.read_text())
    except ValueError as error:
        sys.exit(f"{there} is not valid JSON ({error}); fix or delete it, then run this again.")
    for key, value in ours.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def install(prefix: Path) -> list[Path]:
    """Copy the student configuration under prefix/etc/jupyter; returns the files written."""
    if not prefix.is_dir():
        sys.exit(f"{prefix} is not a folder; name the environment's prefix with --prefix.")
    config_dir = prefix / "etc" / "jupyter"
    written = []
    for name, place in FILES.items():
        target = config_dir / place
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "page_config.json":
            page = _merged_page_config(json.loads((HERE / name).read_text()), target)
            target.write_text(json.dumps(page, indent=2) + "\n")
        else:
            shutil.copyfile(HERE / name, target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--prefix",
        type=Path,
        default=Path(sys.prefix),
        help="the environment's prefix (default: this interpreter's, %(default)s)",
    )
    for path in install(parser.parse_args(argv).prefix.resolve()):
        print(f"installed {path}")


if __name__ == "__main__":
    main()
