"""evaluate's pieces: what it reads from a split, pure metrics, the mergeable CombineFn and metrics.json/report.html; may import image/, io/ and schemas."""
