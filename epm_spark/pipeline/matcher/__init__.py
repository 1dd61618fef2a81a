"""The matcher's training jobs: teacher rationales, human review (files and the review page), the
cascade."""
