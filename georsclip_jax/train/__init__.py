"""Training: optimizer and schedules, the train step, the loop."""
