"""nbgrader configuration of the initlab course. The course root is this folder:
source/, release/, solutions/ and, after grading, submitted/, autograded/, feedback/
and gradebook.db live beside this file."""

import os
import sys
from pathlib import Path

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor
from nbgrader.converters import GenerateAssignment
from nbgrader.preprocessors import GetGrades

ROOT = Path(__file__).resolve().parent
AUTOGRADER = ROOT / "autograder"

# Hidden tests import `initlab_grading` (references, checks). It lives in autograder/,
# which students never receive; kernels started by nbgrader inherit this PYTHONPATH.
sys.path.insert(0, str(AUTOGRADER))
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(AUTOGRADER), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
)
from jupyter_client.manager import KernelManager  # noqa: E402
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    ClearOutput,
    IgnorePattern,
    LimitOutput,
    OverwriteKernelspec,
    SaveAutoGrades,
)

from initlab_grading.grading.evidence import (  # noqa: E402
    KeepSubmittedEvidence,
    ShowSubmittedEvidence,
)
from initlab_grading.grading.kernels import SandboxedKernelManager  # noqa: E402
from initlab_grading.grading.preprocessors import (  # noqa: E402
    DropDuplicateIds,
    DropInstructorCells,
    GuardedExecute,
    HideHiddenTests,
    RestoreDeletedCells,
    SanitizeMarkdown,
)
from initlab_grading.grading.sandbox import CODE_FILES  # noqa: E402

c = get_config()  # noqa: F821 (provided by nbgrader when it loads this file)

c.CourseDirectory.root = str(ROOT)
c.CourseDirectory.course_id = "initlab"
c.CourseDirectory.solution_directory = "solutions"

# Student versions: a stub that says what to do; every nbgrader cell must carry metadata.
c.ClearSolutions.code_stub = {
    "python": '# YOUR CODE HERE\nraise NotImplementedError("Replace this line with your answer.")'
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.enforce_metadata = True
# Instructor checks (cells tagged "instructor-only": assertions that what the text says
# about an output holds) stay in source/ and solutions/, where CI runs them, and are
# removed from the student version before anything else sees it.
c.GenerateAssignment.preprocessors = [
    DropInstructorCells,
    *GenerateAssignment.class_traits()["preprocessors"].default(),
]

# A test cell a student deleted comes back from the gradebook and runs: deleting the
# tests of a wrong answer gains nothing (nbgrader's default is not to restore them, and
# its restoring code fails when a test cell follows an ordinary cell; RestoreDeletedCells
# mends that).
# The outputs of the cells a written answer discusses are kept as submitted before they
# are cleared, and shown after the answer in the autograded notebook (formgrader, feedback):
# initlab_grading.grading.evidence.
c.Autograde.sanitize_preprocessors = [
    KeepSubmittedEvidence,
    ClearOutput,
    DropDuplicateIds,
    OverwriteKernelspec,
    RestoreDeletedCells,
    CheckCellMetadata,
]
c.OverwriteCells.add_missing_cells = True

# Executing: test cells run in nbgrader's own process, the kernel answering for the
# notebook's names (initlab_grading.grading.remote), so a submission that replaces what the
# tests rely on gains nothing; a kernel that dies keeps the scores of the cells that ran
# before; huge output is cut (initlab_grading.grading.preprocessors.GuardedExecute).
c.Autograde.autograde_preprocessors = [
    GuardedExecute,
    ShowSubmittedEvidence,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Output on stderr (a warning, a progress bar) never costs points: only an exception
# fails a test cell. nbgrader would otherwise score any stderr in a test cell as zero
# (its IgnorePattern is in the default list but disabled, so it must be enabled here).
c.IgnorePattern.pattern = r"[\s\S]"
c.IgnorePattern.enabled = True  # nbconvert preprocessors are off unless enabled

# Every kernel nbgrader starts runs through the kit's sandbox launcher: the grading
# command's kernelspec already does (with its options' limits); plain `nbgrader autograde`
# (and generate_solution, validate) get its default limits and the reduced environment, so
# no grader's secret reaches a submission whichever command grades it.
c.Execute.kernel_manager_class = SandboxedKernelManager

# Per-cell time limit while grading and generating solutions (seconds).
c.Execute.timeout = 300
# Seconds to wait for a cell's remaining output after the kernel said the cell finished.
# nbgrader fails the whole submission when that runs out (nbclient's default is 4 s, which
# a cell printing 100 MB on a busy machine exceeds); the output is cut at 2 MB anyway.
c.Execute.iopub_timeout = 60

# Kernels never import from their working folder: nbgrader copies every other file of a
# submission next to the notebook, and IPython would put that folder first on sys.path,
# so a shipped initlab/checks.py or numpy.py would replace what the tests import. Code
# files are not copied at all (collect and autograde skip these names); the kit's grading
# command reports them (initlab_grading.grading.attempts.inspect_submission).
c.Execute.extra_arguments = ["--InteractiveShellApp.ignore_cwd=True"]
c.CourseDirectory.ignore = [".ipynb_checkpoints", "__pycache__", "feedback", *CODE_FILES]

# Feedback shows each test's message and points, never hidden test code.
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
# How much the hidden tests' messages reveal in feedback: "expected" (the expected value,
# the formula and the diagnosis), "formula" (no expected value) or "diagnosis" (neither).
# Where resubmission is allowed, "formula" or "diagnosis" keeps the expected values out
# of what a student can copy. Applied when feedback is generated (formgrader and the
# class report show everything); for one run:
#   nbgrader generate_feedback ASSIGNMENT --HideHiddenTests.reveal=diagnosis
c.HideHiddenTests.reveal = "expected"
# A submission's HTML (a display(HTML(...)) output, raw HTML in a markdown answer) is
# shown as inert text in the feedback and in formgrader, which both export through
# HTMLExporter with this config: no <script>, event handler or JavaScript output runs in
# a student's or an instructor's browser. sanitize_html covers outputs; nbgrader's
# templates render markdown cells on their own, which SanitizeMarkdown covers.
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.preprocessors = [SanitizeMarkdown]

# Kernel channels encrypted and authenticated with CurveZMQ where the kernelspec says the
# kernel supports it (the kit's grading kernelspec does when its ipykernel can): without
# it, any local process can subscribe to a kernel's IOPub port on 127.0.0.1 and read its
# output (messages are signed with the connection file's key, not encrypted).
if "transport_encryption" in KernelManager.class_trait_names():
    c.KernelManager.transport_encryption = "auto"
