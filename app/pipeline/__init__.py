"""The live loop's threads (capture -> inference -> output), the bounded hand-offs between them, and their counters."""
