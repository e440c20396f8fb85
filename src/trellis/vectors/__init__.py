"""Raw vector collections: named sets of vectors with metadata, upserted and queried by similarity."""
