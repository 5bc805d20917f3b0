"""Assignment 3 (activation functions): grader and samples."""
