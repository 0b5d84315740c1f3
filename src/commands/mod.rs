//! One driver per subcommand: each takes its parsed arguments, checks them before any work
//! starts, calls the library and prints what the user reads. Errors are `anyhow` here, at
//! the binary's edge; the library's own errors pass through unchanged.

pub mod args;
pub mod attribute;
pub mod bench;
pub mod decay;
pub mod evaluate;
pub mod fetch;
pub mod info;
pub mod predict;
pub mod report;
pub mod survey;
