"""plandb: hierarchical, multi-file SQLite storage for LLM-agent planners."""
