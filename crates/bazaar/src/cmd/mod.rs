//! One module per subcommand.

pub mod client;
pub mod eval;
pub mod serve;
pub mod up;
pub mod verify;
