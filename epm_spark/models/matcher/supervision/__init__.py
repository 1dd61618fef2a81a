"""Supervision for the matcher: the teachers, attribute evidence, human review, judges and RL rewards."""
