"""The Lightning engine: victim fine-tuning, protection, data plumbing. Knows Lightning; calls adapters and
losses."""
