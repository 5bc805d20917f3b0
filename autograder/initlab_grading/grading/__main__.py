"""``python -m initlab_grading.grading ASSIGNMENT ...``: grade a class
(initlab_grading.grading.grade)."""

import sys

from initlab_grading.grading.grade import main

sys.exit(main())
