//! One module per subcommand.

pub mod chaos;
pub mod client;
pub mod demo;
pub mod eval;
pub mod netchaos;
pub mod serve;
pub mod status;
pub mod up;
pub mod verify;
