"""``python -m initlab_grading.course``: the instructor's loop (initlab_grading.course.build)."""

import sys

from initlab_grading.course.build import main

sys.exit(main())
