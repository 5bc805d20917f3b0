"""Assignment 4 (initialization): grader and samples."""
