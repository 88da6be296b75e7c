-- The embedded vector index (memory): one row per indexed document, the
-- vector as little-endian f32, the payload as JSON. Exact search happens in
-- memory; this table is what survives a restart.
CREATE TABLE memory_vectors (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL
               CHECK (kind IN ('incident', 'outcome', 'template_summary', 'skill')),
    embedder   TEXT NOT NULL,
    dim        INTEGER NOT NULL CHECK (dim > 0),
    vector     BLOB NOT NULL,
    payload    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    CHECK (length(vector) = 4 * dim)
);
CREATE INDEX memory_vectors_kind_created ON memory_vectors(kind, created_at);
CREATE INDEX memory_vectors_embedder ON memory_vectors(embedder);
