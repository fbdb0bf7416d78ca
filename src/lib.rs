//! The `skiff` binary's library half: configuration and the assembly of a running cluster,
//! shared by the CLI and the integration tests.

pub mod bench;
pub mod bench_hollow;
pub mod bench_rules;
pub mod bench_scheduler;
pub mod bench_startup;
pub mod config;
pub mod join;
pub mod security;
pub mod sim;
pub mod system;
pub mod token;
