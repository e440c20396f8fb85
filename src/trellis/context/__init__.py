"""The context store: typed contexts with relationships, hybrid search, vector collections, ingestion."""
