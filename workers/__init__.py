"""Workers: the scheduler (placement) and the engine workers that run models and stream tokens."""
