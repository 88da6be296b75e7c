-- The embedded vector index (memory): one row per indexed document, the
-- vector as little-endian f32, the payload as JSON. Exact search happens in
-- memory; this table is what survives a restart.
CREATE TABLE memory_vectors (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL
               CHECK (kind IN ('incident', 'outcome', 'template_summary', 'skill')),
    embedder   TEXT NOT NULL,
    dim        BIGINT NOT NULL CHECK (dim > 0),
    vector     BYTEA NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (octet_length(vector) = 4 * dim)
);
CREATE INDEX memory_vectors_kind_created ON memory_vectors(kind, created_at);
CREATE INDEX memory_vectors_embedder ON memory_vectors(embedder);
