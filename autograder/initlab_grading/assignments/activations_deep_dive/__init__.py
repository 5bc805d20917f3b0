"""Assignment 3b (activation functions, deep dive): grader and samples."""
