//! filled in later
