"""EPM-RL product matcher: structured decisions, teachers, judges, rewards, student training and inference."""
