"""Assignment 5b (the kurtosis lab's deep dive): grader and samples."""
