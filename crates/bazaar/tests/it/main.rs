//! Process tests: every test starts real `bazaar` processes on free loopback ports in a
//! temporary directory, drives them over HTTP, and kills them with SIGKILL where the test is
//! about crashes.

mod support;

mod api;
mod bad_input;
mod browser;
mod cache;
mod cli;
mod dashboard;
mod failover;
mod limits;
mod raft;
mod restart;
mod security;
mod signals;
mod trading;
mod view;
