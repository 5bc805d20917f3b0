"""Assignment 5 (the kurtosis lab): grader and samples."""
