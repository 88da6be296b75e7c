//! `wingman-hub`: the central server.
pub mod store;
