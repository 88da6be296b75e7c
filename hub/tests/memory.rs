//! Memory tests: the vector-store behavioural suite (embedded always, Qdrant
//! when `WINGMAN_TEST_QDRANT_URL` is set), the HTTP embedders against
//! loopback servers, the indexer and retriever, the recall evaluation, and
//! retrieval inside a running hub (similar incidents, search, 503).

pub(crate) mod common;
mod eval;
mod http;
mod hub;
mod indexer;
mod suite;
