"""Assignment 2 (backpropagation): grader and samples."""
