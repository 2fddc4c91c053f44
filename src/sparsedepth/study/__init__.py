"""The analysis side of the study: statistics over seeds and documents, and what the design can detect."""
