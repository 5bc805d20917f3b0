"""Assignment 2b (backpropagation, deep dive): grader and samples."""
