"""Assignment 1 (gradient descent): grader and samples."""
