"""Assignment 4b (initialization, deep dive): grader and samples."""
