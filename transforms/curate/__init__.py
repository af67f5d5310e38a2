"""curate's composites and cross-image algorithms (AnalyzeImages, duplicate clusters, near-duplicate search, summary, report.html); may import image/, io/ and schemas."""
