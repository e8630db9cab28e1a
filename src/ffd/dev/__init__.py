"""Developer tools: measurements of ffd itself (host syncs in the training loop), not used by the commands
except as an opt-in callback of ffd.bench."""
