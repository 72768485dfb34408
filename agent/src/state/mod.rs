//! The agent's persisted state: which generation it committed, the one it is trying, the ones
//! it rolled back. One file, replaced atomically (see [`file`]), so kill -9 at any moment
//! leaves a state the next start can use.

pub mod file;
mod store;

pub use store::{AgentState, LoadReport, StateError, StateStore};
