//! One module per subcommand.

pub mod chaos;
pub mod client;
pub mod eval;
pub mod netchaos;
pub mod serve;
pub mod up;
pub mod verify;
