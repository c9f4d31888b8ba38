"""The engine worker: takes placed jobs, runs them on its engine, streams frames to the edge."""
