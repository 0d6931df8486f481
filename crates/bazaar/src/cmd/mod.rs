//! One module per subcommand.

pub mod serve;
pub mod up;
pub mod verify;
