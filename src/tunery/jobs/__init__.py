"""Jobs: the fine-tuning job state machine, claiming queued jobs and running each in a training subprocess."""
