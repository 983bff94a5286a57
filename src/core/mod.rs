//! The pure core: what Meta said, what the rules decide, and the loop that applies them to
//! stored state. Nothing here does I/O of its own (the store is an interface; the Redis one is
//! in [`crate::adapters`]), so the worker, `coexist process` and the tests run the same code.

pub mod apply;
pub mod domain;
pub mod engine;
pub mod meta;
pub mod numbers;
pub mod onboarding;
pub mod store;
pub mod time;
pub mod unit;
